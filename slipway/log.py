"""structlog set-up shared by every daemon and the CLI.

JSON lines when stderr is not a terminal (systemd, files), a readable console
otherwise. Messages are short constant phrases; data goes in keys drawn from one
vocabulary: app, release, dyno, node, build, method, code, duration_ms, error.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(component: str, level: str | None = None, *, json: bool | None = None) -> None:
    level_name = (level or os.environ.get("SLIPWAY_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    use_json = json if json is not None else not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component)


def get(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
