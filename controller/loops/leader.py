"""Leader election on etcd: one controller runs the scheduler, the rest stay warm.

The leader holds ``{prefix}/leader`` under a short lease it keeps alive. If it
dies, the lease expires and another controller takes the key within about one
TTL. A leader that cannot refresh its lease steps down at once, so two
controllers never both believe they lead for longer than the TTL.
"""

from __future__ import annotations

import asyncio

from slipway import errors
from slipway import log as slog
from slipway.backoff import Backoff
from slipway.etcd import Etcd
from slipway.keys import Keys

log = slog.get("controller.leader")


class Leadership:
    def __init__(self, etcd: Etcd, keys: Keys, identity: str, *, ttl: int = 5) -> None:
        self.etcd = etcd
        self.keys = keys
        self.identity = identity
        self.ttl = ttl
        self._leader = False
        self.changed = asyncio.Event()
        self.elected = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._leader

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            log.info("leadership changed", leader=leader, identity=self.identity)
            if leader:
                self.elected.set()
            else:
                self.elected.clear()
            self.changed.set()

    async def current_leader(self) -> str:
        kv = await self.etcd.get(self.keys.leader())
        return kv.value.decode() if kv else ""

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=2.0)
        try:
            while True:
                try:
                    await self._campaign()
                    backoff.reset()
                except errors.SlipwayError as exc:
                    self._set(False)
                    log.warning("election error", error=str(exc))
                    await asyncio.sleep(backoff.next())
        finally:
            if self._leader:
                self._set(False)
                # Hand over at once instead of making the others wait a TTL.
                try:
                    await asyncio.wait_for(self._resign(), 2.0)
                except (TimeoutError, errors.SlipwayError):
                    pass

    async def _resign(self) -> None:
        kv = await self.etcd.get(self.keys.leader())
        if kv is not None and kv.value.decode() == self.identity:
            await self.etcd.delete(self.keys.leader())

    async def _campaign(self) -> None:
        lease = await self.etcd.lease(self.ttl)
        try:
            if not await self.etcd.create(
                self.keys.leader(), self.identity.encode(), lease=lease.id
            ):
                # Someone else leads: check again shortly.
                await asyncio.sleep(min(1.0, self.ttl / 4))
                return
            self._set(True)
            while True:
                await asyncio.sleep(self.ttl / 3)
                if await self.etcd.refresh_lease(lease.id) <= 0:
                    log.warning("leader lease lost", identity=self.identity)
                    self._set(False)
                    return
        finally:
            if not self._leader:
                try:
                    await asyncio.wait_for(self.etcd.revoke_lease(lease.id), 1.0)
                except (TimeoutError, errors.SlipwayError):
                    pass
