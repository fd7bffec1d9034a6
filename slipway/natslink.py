"""One long-lived NATS connection a daemon holds: connect in the background with
backoff, run a set-up step (streams, buckets), then hold it until cancelled.

Callers that need the connection before it is up get :class:`errors.Unavailable`
with a sentence naming what is unavailable, so the rest of the daemon keeps
serving while NATS is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS

from slipway import errors, objstore
from slipway import log as slog
from slipway.backoff import Backoff
from slipway.pki import Bundle

log = slog.get("natslink")


class NatsLink:
    def __init__(
        self,
        servers: Sequence[str],
        *,
        name: str,
        purpose: str,
        setup: Callable[[NATS], Awaitable[None]] | None = None,
        credentials: Bundle | None = None,
    ) -> None:
        self.servers = list(servers)
        self.credentials = credentials
        self.name = name
        self.purpose = purpose
        self._setup = setup
        self._nc: NATS | None = None
        self.connected = asyncio.Event()

    @property
    def current(self) -> NATS | None:
        """The connection, or None while there is none (for best-effort callers)."""
        return self._nc

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise errors.Unavailable(
                f"the controller is not connected to NATS ({','.join(self.servers)}) yet; "
                f"{self.purpose} are unavailable",
                reason="nats_unavailable",
            )
        return self._nc

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        while self._nc is None:
            try:
                nc = await objstore.connect(
                    self.servers, name=self.name, credentials=self.credentials
                )
                try:
                    if self._setup is not None:
                        await self._setup(nc)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(nc.close(), 2.0)
                    raise
            except Exception as exc:  # nats-py raises a mix of its own and OS errors
                log.warning("nats not reachable", purpose=self.purpose, error=str(exc))
                await asyncio.sleep(backoff.next())
                continue
            self._nc = nc
            self.connected.set()
            log.info("nats connected", purpose=self.purpose, servers=",".join(self.servers))
        try:
            await asyncio.Event().wait()
        finally:
            nc, self._nc = self._nc, None
            self.connected.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)
