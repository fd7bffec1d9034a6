"""Load the scheduler's inputs from etcd: desired apps and the cluster as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.core.models import AppRecord, ReleaseRecord, decode_formation
from controller.core.scheduler import (
    AppWant,
    Cluster,
    NodeInfo,
    Placement,
    ProcessWant,
    choose_node,
)
from controller.core.sizes import SizeTable
from slipway import errors
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.records import NodeRecord, StatusRecord


class ReleaseCache:
    """Releases never change once written (but status), so reading each once is enough."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys
        self._cache: dict[tuple[str, int], ReleaseRecord] = {}

    async def get(self, app: str, version: int) -> ReleaseRecord | None:
        cached = self._cache.get((app, version))
        if cached is not None:
            return cached
        kv = await self.etcd.get(self.keys.release(app, version))
        if kv is None:
            return None
        release = ReleaseRecord.decode(kv.value)
        if len(self._cache) > 5000:
            self._cache.clear()
        self._cache[(app, version)] = release
        return release


@dataclass
class Snapshot:
    apps: dict[str, AppRecord]
    wants: list[AppWant]
    cluster: Cluster
    statuses: dict[str, StatusRecord]
    node_records: dict[str, NodeRecord]


def _suffix(key: bytes, prefix: bytes) -> str:
    return key[len(prefix) :].decode()


async def load_nodes(etcd: Etcd, keys: Keys) -> tuple[dict[str, NodeRecord], set[str]]:
    kvs, _ = await etcd.get_prefix(keys.nodes())
    nodes = {}
    for kv in kvs:
        record = NodeRecord.decode(kv.value)
        nodes[record.name] = record
    drain_kvs, _ = await etcd.get_prefix(keys.drains())
    draining = {_suffix(kv.key, keys.drains()) for kv in drain_kvs}
    return nodes, draining


async def load_placements(etcd: Etcd, keys: Keys, app: str | None = None) -> list[Placement]:
    kvs, _ = await etcd.get_prefix(keys.dynos(app))
    return [Placement.decode(kv.value) for kv in kvs]


async def load_statuses(etcd: Etcd, keys: Keys, app: str | None = None) -> dict[str, StatusRecord]:
    kvs, _ = await etcd.get_prefix(keys.statuses(app))
    statuses = {}
    for kv in kvs:
        record = StatusRecord.decode(kv.value)
        statuses[record.instance_id] = record
    return statuses


async def load(etcd: Etcd, keys: Keys, sizes: SizeTable, releases: ReleaseCache) -> Snapshot:
    app_kvs, _ = await etcd.get_prefix(keys.apps())
    apps = {a.name: a for a in (AppRecord.decode(kv.value) for kv in app_kvs)}
    formation_kvs, _ = await etcd.get_prefix(keys.formations())
    formations = {
        _suffix(kv.key, keys.formations()): decode_formation(kv.value) for kv in formation_kvs
    }

    wants = []
    for app in apps.values():
        if not app.current_release:
            continue
        release = await releases.get(app.name, app.current_release)
        if release is None:
            continue
        processes = []
        for ptype, item in sorted(formations.get(app.name, {}).items()):
            try:
                size = sizes.get(item.size)
            except errors.InvalidArgument:
                size = sizes.get("standard-1x")
            processes.append(
                ProcessWant(
                    ptype,
                    item.quantity,
                    size.name,
                    size.memory_mb,
                    size.max_processes,
                    size.cpu_shares,
                )
            )
        wants.append(
            AppWant(
                app.name,
                release.version,
                release.slug.digest,
                dict(release.process_types),
                tuple(processes),
                release.slug.stack,
            )
        )

    node_records, draining = await load_nodes(etcd, keys)
    nodes = {
        n.name: NodeInfo(n.name, n.address, n.capacity_mb, n.name in draining, n.stack)
        for n in node_records.values()
    }
    placements = tuple(await load_placements(etcd, keys))
    statuses = await load_statuses(etcd, keys)
    cluster = Cluster(nodes, placements, {i: s.state for i, s in statuses.items()})
    return Snapshot(apps, wants, cluster, statuses, node_records)


async def choose_one_off_node(
    etcd: Etcd,
    keys: Keys,
    app: str,
    ptype: str,
    memory_mb: int,
    *,
    stack: str = "",
    eligible: Callable[[NodeRecord], bool] = lambda record: True,
) -> NodeRecord | None:
    """A node for one extra dyno (run.N, release.N), by the scheduler's own capacity
    rules, among those running ``stack`` (the slug's)."""
    node_records, draining = await load_nodes(etcd, keys)
    nodes = [
        NodeInfo(r.name, r.address, r.capacity_mb, r.name in draining, r.stack)
        for r in node_records.values()
        if eligible(r)
    ]
    placements = await load_placements(etcd, keys)
    chosen = choose_node(nodes, placements, app, ptype, memory_mb, stack)
    return node_records[chosen] if chosen else None
