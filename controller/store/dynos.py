"""ps, ps:restart, ps:stop and nodes: read placements and statuses, change placements.

Restart and stop are desired-state changes any controller may make (not only
the leader): a restart marks the chosen placements ``restart_requested`` in one
transaction, and the leader's plan starts a fresh instance of each and stops the
old one once the new is up (preboot: no gap even with ``web=1``); a stop deletes
the placement (the leader then places a fresh copy of a formation dyno; a
one-off dyno simply ends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from controller.core.scheduler import Placement
from controller.store.snapshot import load_nodes, load_placements, load_statuses
from controller.store.state import State
from slipway import errors
from slipway.records import StatusRecord


@dataclass
class DynoView:
    placement: Placement
    status: StatusRecord | None

    @property
    def state(self) -> str:
        return self.status.state if self.status else "starting"


@dataclass
class NodeView:
    name: str
    address: str
    capacity_mb: int
    reserved_mb: int
    dynos: int
    draining: bool
    labels: dict[str, str]
    metrics: dict[str, float]
    stack: str = ""


def _sort_key(p: Placement) -> tuple[str, int, float]:
    return (p.type, p.index, p.created_at)


class Dynos:
    def __init__(self, state: State) -> None:
        self.state = state
        self.clock = state.clock
        self.etcd = state.etcd
        self.keys = state.keys

    async def list_dynos(self, app: str) -> list[DynoView]:
        await self.state.get_app(app)
        placements = await load_placements(self.etcd, self.keys, app)
        statuses = await load_statuses(self.etcd, self.keys, app)
        nodes, _ = await load_nodes(self.etcd, self.keys)
        memory = await self._dyno_memory()
        views = []
        for p in sorted(placements, key=_sort_key):
            status = statuses.get(p.instance_id)
            if status is None and p.node not in nodes:
                status = StatusRecord(
                    p.app, p.name, p.instance_id, p.node, p.type, p.release, "lost"
                )
            elif status is not None:
                # Memory moves every sample; it comes with heartbeats, not status writes.
                status.memory_bytes = memory.get(p.instance_id, status.memory_bytes)
            views.append(DynoView(p, status))
        return views

    async def _dyno_memory(self) -> dict[str, int]:
        kvs, _ = await self.etcd.get_prefix(self.keys.node_metrics_all())
        memory: dict[str, int] = {}
        for kv in kvs:
            memory.update(json.loads(kv.value).get("dyno_memory", {}))
        return memory

    def _select(self, placements: list[Placement], target: str) -> list[Placement]:
        if not target:
            return placements
        if "." in target:
            chosen = [p for p in placements if p.name == target]
        else:
            chosen = [p for p in placements if p.type == target]
        if not chosen:
            names = ", ".join(sorted({p.name for p in placements})) or "none"
            raise errors.NotFound(f"no dyno or process type {target!r}; dynos: {names}")
        return chosen

    async def restart(self, app: str, target: str) -> list[str]:
        await self.state.get_app(app)
        placements = [
            p for p in await load_placements(self.etcd, self.keys, app) if p.kind == "formation"
        ]
        chosen = self._select(placements, target)
        tx = self.etcd.tx
        ops = []
        for p in chosen:
            marked = replace(p, restart_requested=True)
            ops.append(tx.put(self.keys.dyno(app, p.instance_id), marked.encode()))
        compares = [tx.version(self.keys.dyno(app, p.instance_id)) > 0 for p in chosen]
        if not await self.etcd.txn(compare=compares, success=ops):
            raise errors.Conflict("the dynos changed meanwhile (a deploy or scale?); try again")
        return sorted({p.name for p in chosen})

    async def stop(self, app: str, dyno: str) -> list[str]:
        if not dyno or "." not in dyno:
            raise errors.InvalidArgument(f"give a dyno name like web.1, not {dyno!r}")
        await self.state.get_app(app)
        placements = await load_placements(self.etcd, self.keys, app)
        chosen = self._select(placements, dyno)
        for p in chosen:
            await self.etcd.delete(self.keys.dyno(app, p.instance_id))
        return sorted({p.name for p in chosen})

    async def nodes(self) -> list[NodeView]:
        records, draining = await load_nodes(self.etcd, self.keys)
        placements = await load_placements(self.etcd, self.keys)
        metrics_kvs, _ = await self.etcd.get_prefix(self.keys.node_metrics_all())
        metrics = {}
        for kv in metrics_kvs:
            m = json.loads(kv.value)
            metrics[m["node"]] = m
        views = []
        for name, record in sorted(records.items()):
            mine = [p for p in placements if p.node == name]
            views.append(
                NodeView(
                    name=name,
                    address=record.address,
                    capacity_mb=record.capacity_mb,
                    reserved_mb=sum(p.memory_mb for p in mine),
                    dynos=len(mine),
                    draining=name in draining,
                    labels=dict(record.labels),
                    metrics=metrics.get(name, {}),
                    stack=record.stack,
                )
            )
        return views

    async def drain(self, node: str, *, undrain: bool = False) -> int:
        records, _ = await load_nodes(self.etcd, self.keys)
        if node not in records and not undrain:
            names = ", ".join(sorted(records)) or "none"
            raise errors.NotFound(f"no node {node!r}; nodes: {names}")
        if undrain:
            await self.etcd.delete(self.keys.drain(node))
        else:
            await self.etcd.put(
                self.keys.drain(node), json.dumps({"since": self.clock.now()}).encode()
            )
        placements = await load_placements(self.etcd, self.keys)
        return sum(1 for p in placements if p.node == node)
