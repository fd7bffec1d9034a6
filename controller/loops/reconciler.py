"""The leader's control loop: load, plan, apply; woken by etcd changes, resynced on a timer.

Level-based: a wake-up carries no detail, the loop re-reads everything it
needs. Only the leader writes placements; followers keep their watches warm
and start with a full reconcile the moment they are elected.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from controller.core.scheduler import CRASHED, Placement, Plan, plan
from controller.core.sizes import SizeTable
from controller.loops.leader import Leadership
from controller.store import snapshot
from slipway import errors
from slipway import log as slog
from slipway.backoff import Backoff
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys

if TYPE_CHECKING:
    from controller.bus.apilog import ApiLog

log = slog.get("controller.reconciler")

# etcd refuses transactions with more operations than this (its default).
MAX_TXN_OPS = 128


class Reconciler:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        sizes: SizeTable,
        leadership: Leadership,
        *,
        resync_seconds: float = 5.0,
        cycle_seconds: float = 0.0,
        app_log: ApiLog | None = None,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        self.etcd = etcd
        self.keys = keys
        self.sizes = sizes
        self.leadership = leadership
        self.resync_seconds = resync_seconds
        # Daily dyno cycling period (0: off); "Cycling" lines go to app_log.
        self.cycle_seconds = cycle_seconds
        self.app_log = app_log
        self.releases = snapshot.ReleaseCache(etcd, keys)
        self.wake = asyncio.Event()
        self.passes = 0
        self._unplaced_logged: set[tuple[str, str]] = set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for prefix in (
                self.keys.apps(),
                self.keys.formations(),
                self.keys.nodes(),
                self.keys.dynos(),
                self.keys.statuses(),
                self.keys.drains(),
            ):
                tg.create_task(self._watch(prefix))
            tg.create_task(
                self.leadership.run_while_leading(
                    "reconciler",
                    self.reconcile_once,
                    wake=self.wake,
                    every=self.resync_seconds,
                    # Collapse a burst of events (a deploy touches several keys) into one pass.
                    settle=0.02,
                )
            )

    async def _watch(self, prefix: bytes) -> None:
        """Turn every change under ``prefix`` into a wake-up; re-list after a broken stream."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            try:
                revision = await self.etcd.revision()
                async for _ in self.etcd.watch_prefix(prefix, revision + 1):
                    self.wake.set()
                    backoff.reset()
            except errors.SlipwayError as exc:
                log.debug("watch broken", prefix=prefix.decode(), error=str(exc))
            self.wake.set()
            await asyncio.sleep(backoff.next())

    async def reconcile_once(self) -> Plan:
        snap = await snapshot.load(self.etcd, self.keys, self.sizes, self.releases)
        result = plan(snap.wants, snap.cluster, self.clock.now(), cycle_seconds=self.cycle_seconds)
        if not self.leadership.is_leader:
            return result
        await self._apply(result)
        await self._update_crash_flags(snap, result)
        self.passes += 1
        return result

    async def _apply(self, result: Plan) -> None:
        for p in result.lost:
            log.warning("dyno lost with its node", app=p.app, dyno=p.name, node=p.node)
        for u in result.unplaced:
            if (u.app, u.name) not in self._unplaced_logged:
                log.warning("cannot place dyno", app=u.app, dyno=u.name, error=u.reason)
                if self.app_log is not None:
                    # The app's developer reads this, not the controller's log.
                    self.app_log.emit(
                        u.app, f"Cannot start {u.name}: {u.reason}", source="heroku", process=u.name
                    )
                self._unplaced_logged.add((u.app, u.name))
        if result.empty:
            return
        ops = [
            self.etcd.tx.put(self.keys.dyno(p.app, p.instance_id), p.encode()) for p in result.add
        ]
        ops += [self.etcd.tx.delete(self.keys.dyno(p.app, p.instance_id)) for p in result.remove]
        for start in range(0, len(ops), MAX_TXN_OPS):
            await self._commit(ops[start : start + MAX_TXN_OPS])
        for p in result.cycled:
            log.info("dyno cycling", app=p.app, dyno=p.name, instance=p.instance_id)
            if self.app_log is not None:
                self.app_log.emit(p.app, "Cycling", source="heroku", process=p.name)
        for p in result.add:
            self._unplaced_logged.discard((p.app, p.name))
            log.info(
                "dyno placed",
                app=p.app,
                dyno=p.name,
                node=p.node,
                release=p.release,
                instance=p.instance_id,
            )
        for p in result.remove:
            log.info(
                "dyno removed",
                app=p.app,
                dyno=p.name,
                node=p.node,
                release=p.release,
                instance=p.instance_id,
            )

    async def _commit(self, ops: Sequence[object]) -> None:
        # Guarded by the leader key: a controller that lost leadership writes nothing.
        leader = self.etcd.tx.value(self.keys.leader()) == self.leadership.identity.encode()
        if not await self.etcd.txn(compare=[leader], success=ops):
            raise errors.FailedPrecondition("no longer the leader; placements not written")

    async def _update_crash_flags(self, snap: snapshot.Snapshot, result: Plan) -> None:
        """Tell routers (H10) when every web dyno of an app's current release has crashed."""
        removed = {p.instance_id for p in result.remove}
        web: dict[str, list[Placement]] = {}
        for p in snap.cluster.placements:
            if p.type == "web" and p.instance_id not in removed:
                web.setdefault(p.app, []).append(p)
        for app_name in snap.apps:
            placements = web.get(app_name, [])
            crashed = bool(placements) and all(
                snap.cluster.states.get(p.instance_id) == CRASHED for p in placements
            )
            await self._set_crashed(app_name, crashed)

    async def _set_crashed(self, app: str, crashed: bool) -> None:
        key = self.keys.route_app(app)
        kv = await self.etcd.get(key)
        if kv is None:
            return
        record = json.loads(kv.value)
        if bool(record.get("crashed")) == crashed:
            return
        record["crashed"] = crashed
        value = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        await self.etcd.txn(
            compare=[self.etcd.tx.mod(key) == kv.mod_revision],
            success=[self.etcd.tx.put(key, value)],
        )
