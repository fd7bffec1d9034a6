"""The controller's NATS connection: object store (sources, slugs, caches) and build events.

The control plane must keep serving apps and config when NATS is down, so the
connection is made in the background with backoff; build calls made before it
is up fail with UNAVAILABLE and a sentence saying why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from slipway import buildproto, logline, objstore
from slipway import log as slog
from slipway.natslink import NatsLink
from slipway.pki import Bundle

log = slog.get("controller.buildbus")


class BuildBus:
    def __init__(
        self, servers: Sequence[str], *, replicas: int = 1, credentials: Bundle | None = None
    ) -> None:
        self.servers = list(servers)
        self.replicas = replicas  # copies of every stream and bucket made here
        self._stores: objstore.ObjectStores | None = None
        self.link = NatsLink(
            servers,
            name="slipway-controller",
            purpose="builds",
            setup=self._setup,
            credentials=credentials,
        )
        self.connected = self.link.connected

    async def _setup(self, nc: NATS) -> None:
        js = nc.jetstream()
        stores = objstore.ObjectStores(js, replicas=self.replicas)
        await stores.ensure_buckets()
        await stores.ensure(objstore.ADDON_BACKUPS)
        await buildproto.ensure_streams(js, replicas=self.replicas)
        self._stores = stores

    @property
    def nc(self) -> NATS:
        return self.link.nc

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
        await self.link.run()

    async def app_log(self, app: str, message: str) -> None:
        """One ``api[...]`` line in the app's log stream; best effort (logs are not state)."""
        nc = self.link.current
        if nc is None:
            return
        with contextlib.suppress(Exception):
            await nc.publish(
                logline.subject(app, logline.Origin.CONTROLLER),
                logline.LogLine(app, "api", "api", message).encode(),
            )
