"""Where the built-in postgresql's backups are kept for good: the cluster's
object store (bucket ``addonbackups`` on NATS JetStream, made by the controller
with the cluster's replica count), so a backup outlives its add-ons host.

The add-ons host keeps a copy of each dump beside its cluster as a cache for
restores and downloads; a missing copy is fetched back from here. The NATS
connection is made on first use and kept; the role ``addons`` may touch this
bucket only (slipway/natsauth.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from nats.aio.client import Client as NATS

from slipway import errors, objstore
from slipway import log as slog
from slipway.pki import Bundle

log = slog.get("addons.vault")

BUCKET = objstore.ADDON_BACKUPS


class BackupVault:
    def __init__(self, servers: Sequence[str], credentials: Bundle | None) -> None:
        self.servers = list(servers)
        self.credentials = credentials
        self._nc: NATS | None = None
        self._stores: objstore.ObjectStores | None = None
        self._connecting = asyncio.Lock()

    async def _store(self) -> objstore.ObjectStores:
        async with self._connecting:
            if self._stores is None:
                self._nc = await objstore.connect(
                    self.servers, name="slipway-addons", credentials=self.credentials
                )
                self._stores = objstore.ObjectStores(self._nc.jetstream(), create=False)
                log.info("object store reached", servers=",".join(self.servers))
            return self._stores

    async def put(self, name: str, path: Path) -> int:
        try:
            return await (await self._store()).put_file(BUCKET, name, path)
        except errors.SlipwayError as exc:
            raise errors.Unavailable(
                f"the backup could not be stored in the object store: {exc.message}"
            ) from exc

    async def get(self, name: str, path: Path) -> None:
        await (await self._store()).get_file(BUCKET, name, path)

    async def delete(self, name: str) -> None:
        await (await self._store()).delete(BUCKET, name)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
