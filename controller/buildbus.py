"""The controller's NATS connection: object store (sources, slugs, caches) and build events.

The control plane must keep serving apps and config when NATS is down, so the
connection is made in the background with backoff; build calls made before it
is up fail with UNAVAILABLE and a sentence saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from slipway import buildproto, errors, logline, objstore
from slipway import log as slog
from slipway.backoff import Backoff

log = slog.get("controller.buildbus")


class BuildBus:
    def __init__(self, servers: Sequence[str], *, replicas: int = 1) -> None:
        self.servers = list(servers)
        self.replicas = replicas  # copies of every stream and bucket made here
        self._nc: NATS | None = None
        self._stores: objstore.ObjectStores | None = None
        self.connected = asyncio.Event()

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise errors.Unavailable(
                f"the controller is not connected to NATS ({','.join(self.servers)}) yet; "
                "builds are unavailable",
                reason="nats_unavailable",
            )
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    @property
    def stores(self) -> objstore.ObjectStores:
        self.nc  # noqa: B018 - raises Unavailable when not connected
        assert self._stores is not None
        return self._stores

    async def run(self) -> None:
        """Connect (retrying), then hold the connection until cancelled."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while self._nc is None:
            try:
                nc = await objstore.connect(self.servers, name="slipway-controller")
                js = nc.jetstream()
                stores = objstore.ObjectStores(js, replicas=self.replicas)
                await stores.ensure_buckets()
                await buildproto.ensure_streams(js, replicas=self.replicas)
            except Exception as exc:  # nats-py raises a mix of its own and OS errors
                log.warning("nats not reachable", error=str(exc))
                await asyncio.sleep(backoff.next())
                continue
            self._nc, self._stores = nc, stores
            self.connected.set()
            log.info("nats connected", servers=",".join(self.servers))
        try:
            await asyncio.Event().wait()
        finally:
            nc = self._nc
            self._nc = None
            self.connected.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)

    async def app_log(self, app: str, message: str) -> None:
        """One ``api[...]`` line in the app's log stream; best effort (logs are not state)."""
        if self._nc is None:
            return
        with contextlib.suppress(Exception):
            await self._nc.publish(
                logline.subject(app), logline.LogLine(app, "api", "api", message).encode()
            )
