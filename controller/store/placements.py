"""Every placement in memory, kept current by an etcd watch.

Node streams wait on :meth:`PlacementIndex.changed` and re-send their node's
full desired set; an index that loses its watch re-lists, so a missed event
can never leave an agent with a stale set for long.
"""

from __future__ import annotations

import asyncio
import contextlib

from controller.core.scheduler import Placement
from slipway import errors
from slipway import log as slog
from slipway.backoff import Backoff
from slipway.etcd import Etcd
from slipway.keys import Keys

log = slog.get("controller.placements")


class PlacementIndex:
    def __init__(self, etcd: Etcd, keys: Keys, *, resync_seconds: float = 30.0) -> None:
        self.etcd = etcd
        self.keys = keys
        self.resync_seconds = resync_seconds
        self._by_key: dict[bytes, Placement] = {}
        self.version = 0
        self.loaded = asyncio.Event()
        self._cond = asyncio.Condition()

    def for_node(self, node: str) -> list[Placement]:
        return sorted(
            (p for p in self._by_key.values() if p.node == node),
            key=lambda p: (p.app, p.name, p.instance_id),
        )

    def all(self) -> list[Placement]:
        return list(self._by_key.values())

    async def _bump(self) -> None:
        async with self._cond:
            self.version += 1
            self._cond.notify_all()

    async def changed(self, since: int, timeout: float) -> int:
        """Wait until the index moves past ``since`` (or ``timeout``); return the version."""
        async with self._cond:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._cond.wait_for(lambda: self.version > since)
            return self.version

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        prefix = self.keys.dynos()
        while True:
            try:
                kvs, revision = await self.etcd.get_prefix(prefix)
                self._by_key = {kv.key: Placement.decode(kv.value) for kv in kvs}
                self.loaded.set()
                await self._bump()
                backoff.reset()
                async with asyncio.timeout(self.resync_seconds):
                    async for event in self.etcd.watch_prefix(prefix, revision + 1):
                        if event.kind == "delete":
                            self._by_key.pop(event.key, None)
                        else:
                            self._by_key[event.key] = Placement.decode(event.value)
                        await self._bump()
            except TimeoutError:
                continue  # periodic full re-list
            except errors.SlipwayError as exc:
                log.debug("placement watch broken", error=str(exc))
                await asyncio.sleep(backoff.next())
