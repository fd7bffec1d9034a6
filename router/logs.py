"""Router log lines: Heroku's format, shipped to NATS in batches off the hot path.

A request only appends a ready string to a bounded in-memory queue
(:meth:`LogShipper.emit` never awaits, never blocks). A background task
publishes what is queued every ``flush_interval`` on ``logs.{app}`` as
:class:`slipway.logline.LogLine` JSON (source ``heroku``, process ``router``).
When NATS is down the queue fills; past ``queue_size`` new lines are dropped
and counted, and requests carry on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from router.config import LogConfig
from slipway import log, objstore
from slipway.backoff import Backoff
from slipway.logline import Origin, subject
from slipway.pki import Bundle

logger = log.get(__name__)

# json.dumps for a plain str, minus the encoder set-up (the C function json uses).
_json_str = json.encoder.encode_basestring_ascii


def _quote(text: str) -> str:
    if '"' in text or "\\" in text or not text.isprintable():
        text = json.dumps(text, ensure_ascii=False)[1:-1]
    return f'"{text}"'


def format_line(
    *,
    method: str,
    path: str,
    host: str,
    request_id: str,
    fwd: str,
    dyno: str,
    connect_ms: int,
    service_ms: int,
    status: int,
    bytes_sent: int,
    protocol: str,
    code: str = "",
    desc: str = "",
) -> str:
    """``at=info method=GET path="/" host=... status=200 bytes=13 protocol=http``."""
    prefix = f'at=error code={code} desc="{desc}" ' if code else "at=info "
    return (
        f"{prefix}method={method} path={_quote(path)} host={host} request_id={request_id} "
        f'fwd="{fwd}" dyno={dyno or "none"} connect={connect_ms}ms service={service_ms}ms '
        f"status={status} bytes={bytes_sent} protocol={protocol}"
    )


class LogShipper:
    """``credentials``: the router's bundle, for NATS over TLS (None: plaintext)."""

    def __init__(self, config: LogConfig, *, credentials: Bundle | None = None) -> None:
        self.config = config
        self.credentials = credentials
        self._queue: deque[tuple[str, str, float]] = deque()
        self._limit = config.queue_size
        self.dropped = 0
        self.published = 0
        self._nc: Any = None
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    def emit(self, app: str, message: str) -> None:
        """Queue one line; never blocks. Dropped (and counted) when the queue is full."""
        queue = self._queue
        if len(queue) >= self._limit:
            self.dropped += 1
            return
        queue.append((app, message, time.time()))
        if len(queue) >= self.config.batch_size:
            self._wake.set()

    async def run(self) -> None:
        if not self.config.servers:
            # No NATS configured: lines are dropped (and counted) as they come.
            while True:
                await asyncio.sleep(1.0)
                self.dropped += len(self._queue)
                self._queue.clear()
        connector = asyncio.create_task(self._connect())
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.flush_interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                await self._publish_batch()
        finally:
            connector.cancel()
            if self._nc is not None:
                try:
                    await asyncio.wait_for(self._publish_batch(), 1.0)
                    await asyncio.wait_for(self._nc.drain(), 2.0)
                except Exception:
                    pass

    async def _connect(self) -> None:
        import nats

        async def quiet(exc: Exception) -> None:
            logger.debug("nats error", error=str(exc))

        backoff = Backoff(initial=0.2, maximum=5.0)
        while self._nc is None:
            try:
                self._nc = await nats.connect(
                    servers=list(self.config.servers),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=quiet,
                    name="slipway-router",
                    **objstore.tls_options(self.credentials),  # type: ignore[arg-type]
                )
                logger.info("nats connected")
            except Exception as exc:
                delay = backoff.next()
                logger.warning(
                    "nats unavailable, router logs queue", error=str(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)

    async def _publish_batch(self) -> None:
        nc = self._nc
        queue = self._queue
        if not queue or nc is None or not nc.is_connected:
            return
        batch = min(len(queue), self.config.batch_size * 4)
        for _ in range(batch):
            app, message, ts = queue.popleft()
            # LogLine.encode's JSON, built by hand: this runs once per request.
            payload = (
                f'{{"ts":{ts!r},"source":"heroku","process":"router",'
                f'"message":{_json_str(message)},"app":{_json_str(app)}}}'
            ).encode()
            try:
                await nc.publish(subject(app, Origin.ROUTER), payload)
            except Exception:
                self.dropped += 1
                continue
            self.published += 1
