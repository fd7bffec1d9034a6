"""Following ``addongrants/`` in etcd: where this node's dynos may connect for add-ons.

The controller's leader keeps one key per app (``slipway.records``); the agent
reads them all (they hold addresses and ports, no secrets), turns them into
``AddonGrant``s for the firewall and re-plans it on every change. Level-based:
any event re-reads the whole prefix, a broken watch re-lists, and the prefix is
re-read every ``RELIST_INTERVAL`` even with no event, so a watch that stalls
without breaking costs seconds, not the grant. A firewall apply that fails is
tried again on the next read. While etcd is away the grants last read stay in
force: dynos keep their database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

from slipway import errors, log, records
from slipway.backoff import Backoff
from slipway.cni import AddonGrant
from slipway.etcd import KV, Etcd
from slipway.keys import Keys

logger = log.get("agent.addon_grants")

RELIST_INTERVAL = 10.0


def grants_from(kvs: Iterable[KV], prefix: bytes) -> tuple[AddonGrant, ...]:
    """Pure: the grants the ``addongrants/{app}`` values say."""
    out = set()
    for kv in kvs:
        app = kv.key[len(prefix) :].decode(errors="replace")
        if not app or "/" in app:
            continue
        for address, port in records.addon_grants_of(kv.value):
            out.add(AddonGrant(app=app, address=address, port=port))
    return tuple(sorted(out, key=lambda g: (g.app, g.address, g.port)))


class GrantFollower:
    def __init__(
        self,
        connect: Callable[[], Awaitable[Etcd]],
        keys: Keys,
        on_change: Callable[[], Awaitable[None]],
        relist_interval: float = RELIST_INTERVAL,
    ) -> None:
        self.connect = connect
        self.keys = keys
        self.on_change = on_change
        self.relist_interval = relist_interval
        self.current: tuple[AddonGrant, ...] = ()
        # False until on_change has run for ``current`` without raising.
        self.applied = False
        self.loaded = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        while True:
            etcd: Etcd | None = None
            try:
                etcd = await self.connect()
                await self._follow(etcd)
            except errors.SlipwayError as exc:
                logger.warning("add-on grants not followed", error=exc.message)
            finally:
                if etcd is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(etcd.close(), 2)
            await asyncio.sleep(backoff.next())

    async def _follow(self, etcd: Etcd) -> None:
        prefix = self.keys.addon_grants()
        changed = asyncio.Event()

        async def watch(revision: int) -> None:
            async for _ in etcd.watch_prefix(prefix, revision + 1):
                changed.set()
            raise errors.Unavailable("the add-on grants watch ended")

        revision = await self._load(etcd)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(watch(revision))
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), self.relist_interval)
                    changed.clear()
                    await self._load(etcd)
        except* errors.SlipwayError as group:
            raise group.exceptions[0] from None

    async def _load(self, etcd: Etcd) -> int:
        prefix = self.keys.addon_grants()
        kvs, revision = await etcd.get_prefix(prefix)
        grants = grants_from(kvs, prefix)
        if grants != self.current or not self.applied:
            self.current = grants
            self.applied = False
            await self.on_change()
            self.applied = True
            logger.info("add-on grants applied", grants=len(grants))
        self.loaded.set()
        return revision
