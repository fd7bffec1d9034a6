"""Router log lines to NATS: one message per app per flush, off the request path.

The data plane writes each request's line (Heroku's router format) as the
JSON object :class:`slipway.logline.LogLine` decodes, and hands them over in
per-app batches. :class:`LogShipper` collects those every ``flush_interval``
and publishes each app's batch as one message on ``logs.{app}.router`` (a
message holds several lines: see :mod:`slipway.logline`), split only where a
batch would pass :data:`MAX_MESSAGE_BYTES`. The shipper never looks inside a
line, so a busy router spends no Python time per request on logs.

While NATS is away batches wait, up to ``queue_size`` lines in all; past that
the oldest waiting batches are dropped and their lines counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from router.config import LogConfig
from slipway import log, objstore
from slipway.backoff import Backoff
from slipway.logline import LogLine, Origin, subject

logger = log.get(__name__)

# Well under nats-server's default max_payload (1 MiB).
MAX_MESSAGE_BYTES = 512 * 1024

Batches = Callable[[], list[tuple[str, bytes]]]


def split_batch(batch: bytes, limit: int = MAX_MESSAGE_BYTES) -> list[bytes]:
    """``batch`` (lines ending in newlines) cut at line ends into pieces of at most
    ``limit`` bytes; a single line longer than that is a piece of its own."""
    if len(batch) <= limit:
        return [batch]
    pieces: list[bytes] = []
    start = 0
    while start < len(batch):
        end = batch.rfind(b"\n", start, start + limit) + 1
        if end <= start:  # one line longer than the limit
            end = batch.find(b"\n", start) + 1 or len(batch)
        pieces.append(batch[start:end])
        start = end
    return pieces


class LogShipper:
    """``source``: the data plane's ``take_logs`` (None: lines only come from
    :meth:`emit`). ``credentials``: the router's bundle, for NATS over TLS."""

    def __init__(
        self, config: LogConfig, *, source: Batches | None = None, credentials: Any = None
    ) -> None:
        self.config = config
        self.source = source
        self.credentials = credentials
        self._waiting: deque[tuple[str, bytes, int]] = deque()  # (app, lines, line count)
        self._waiting_lines = 0
        self._emitted: dict[str, list[bytes]] = {}
        self.dropped = 0
        self.published = 0  # lines
        self.messages = 0
        self._nc: Any = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    def emit(self, app: str, message: str) -> None:
        """Queue one line written here rather than by the data plane."""
        line = LogLine(app, "heroku", "router", message).encode()
        self._emitted.setdefault(app, []).append(line + b"\n")

    def collect(self) -> None:
        """Takes what the data plane and :meth:`emit` left since the last call."""
        batches = self.source() if self.source is not None else []
        if self._emitted:
            batches += [(app, b"".join(lines)) for app, lines in self._emitted.items()]
            self._emitted = {}
        for app, lines in batches:
            for piece in split_batch(lines):
                count = piece.count(b"\n")
                self._waiting.append((app, piece, count))
                self._waiting_lines += count
        excess = self._waiting_lines - self.config.queue_size
        while excess > 0:
            # The oldest lines go first, a whole batch or its first lines.
            app, lines, count = self._waiting.popleft()
            if count > excess:
                cut = 0
                for _ in range(excess):
                    cut = lines.index(b"\n", cut) + 1
                self._waiting.appendleft((app, lines[cut:], count - excess))
                count = excess
            self._waiting_lines -= count
            self.dropped += count
            excess -= count

    async def run(self) -> None:
        connector = asyncio.create_task(self._connect()) if self.config.servers else None
        try:
            while True:
                await asyncio.sleep(self.config.flush_interval)
                self.collect()
                if connector is None:
                    # No NATS configured: lines are dropped (and counted) as they come.
                    self.dropped += self._waiting_lines
                    self._waiting.clear()
                    self._waiting_lines = 0
                    continue
                await self.publish_waiting()
        finally:
            if connector is not None:
                connector.cancel()
            if self._nc is not None:
                try:
                    self.collect()
                    await asyncio.wait_for(self.publish_waiting(), 1.0)
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
                    **objstore.tls_options(self.credentials),
                )
                logger.info("nats connected")
            except Exception as exc:
                delay = backoff.next()
                logger.warning(
                    "nats unavailable, router logs queue", error=str(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)

    async def publish_waiting(self) -> None:
        """Publishes waiting batches in order; stops at the first failure (kept for later)."""
        nc = self._nc
        while self._waiting and nc is not None and nc.is_connected:
            app, lines, count = self._waiting[0]
            try:
                await nc.publish(subject(app, Origin.ROUTER), lines)
            except Exception as exc:
                logger.debug("router log batch not published", app=app, error=str(exc))
                return
            self._waiting.popleft()
            self._waiting_lines -= count
            self.published += count
            self.messages += 1
