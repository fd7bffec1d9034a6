"""Log lines as they travel over NATS, and their Heroku text form.

Every producer (agents for dyno output and dyno-manager events, routers for
request lines, the controller for api events, builders for build events)
publishes one JSON message per line on ``logs.{app}``. A JetStream stream
(``LOGS``, bounded per subject) keeps each app's recent history.

Text form: ``2026-11-21T12:00:00.123456+00:00 app[web.1]: message``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

MAX_LINE_BYTES = 10_000
STREAM = "LOGS"
SUBJECT_PREFIX = "logs"
SOURCES = ("app", "heroku", "api")


def subject(app: str) -> str:
    return f"{SUBJECT_PREFIX}.{app}"


@dataclass(frozen=True)
class LogLine:
    app: str
    source: str  # app | heroku | api
    process: str  # web.1, router, api, build
    message: str
    ts: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "ts": self.ts or time.time(),
                "source": self.source,
                "process": self.process,
                "message": self.message,
                "app": self.app,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> LogLine:
        obj = json.loads(data)
        return cls(
            app=str(obj.get("app", "")),
            source=str(obj["source"]),
            process=str(obj["process"]),
            message=str(obj["message"]),
            ts=float(obj["ts"]),
        )

    def render(self) -> str:
        from datetime import UTC, datetime

        stamp = datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="microseconds")
        return f"{stamp} {self.source}[{self.process}]: {self.message}"


def split_message(message: str, limit: int = MAX_LINE_BYTES) -> list[str]:
    """Split an over-long line into pieces of at most ``limit`` bytes (UTF-8 safe)."""
    raw = message.encode()
    if len(raw) <= limit:
        return [message]
    pieces = []
    start = 0
    while start < len(raw):
        end = min(start + limit, len(raw))
        # do not cut inside a multi-byte character
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(raw[start:end].decode())
        start = end
    return pieces
