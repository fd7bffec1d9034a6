"""``api`` lines in an app's log for changes made through the API, like Heroku's.

    Set A, B config vars by admin        Release v5 created by admin
    Rollback to v2 by admin              Scaled to web@3:standard-1x by admin

The API layer calls :class:`ApiLog` after a change succeeded. Logs are not
state: ``emit`` only appends to a bounded queue (dropping and counting when
full, e.g. while NATS is away) and a background task publishes, so an API call
is never failed or slowed by the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from controller.bus.logs import LogHub
from controller.core.models import FormationItem, ReleaseRecord
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.logline import LogLine, Origin, split_message, subject

log = slog.get("controller.apilog")


def release_lines(release: ReleaseRecord, actor: str) -> list[str]:
    """What Heroku prints for a new release: its cause, then the release itself."""
    return [f"{release.description} by {actor}", f"Release v{release.version} created by {actor}"]


def scale_line(formation: Mapping[str, FormationItem], actor: str) -> str:
    parts = " ".join(f"{t}@{item.quantity}:{item.size}" for t, item in sorted(formation.items()))
    return f"Scaled to {parts} by {actor}"


def restart_line(target: str, actor: str) -> str:
    return f"Restart {target} by {actor}" if target else f"Restart by {actor}"


class ApiLog:
    def __init__(self, hub: LogHub, *, maxsize: int = 1000, clock: Clock = SystemClock()) -> None:
        self._hub = hub
        self.clock = clock
        self._queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.published = 0
        self._last_report = 0.0

    def emit(self, app: str, *messages: str, source: str = "api", process: str = "api") -> None:
        """Queue lines for ``app``'s log; never blocks, never raises.

        The leader's dyno-manager events use it too: ``heroku[web.1]: Cycling``.
        """
        now = self.clock.now()
        for message in messages:
            for piece in split_message(message):
                try:
                    self._queue.put_nowait(LogLine(app, source, process, piece, now))
                except asyncio.QueueFull:
                    self.dropped += 1
        if self.dropped and now - self._last_report > 10:
            self._last_report = now
            log.warning("api log lines dropped", count=self.dropped)

    async def run(self) -> None:
        while True:
            line = await self._queue.get()
            await self._hub.connected.wait()
            try:
                # Core NATS publish only buffers; while reconnecting nats-py raises once
                # its pending buffer is full: count the loss, never wait for the bus.
                await self._hub.nc.publish(subject(line.app, Origin.CONTROLLER), line.encode())
                self.published += 1
            except Exception:
                self.dropped += 1
