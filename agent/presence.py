"""The node's own records in etcd, under a lease the agent keeps alive.

    nodes/{node}                      NodeRecord (presence)
    status/{app}/{instance}           StatusRecord of every dyno this node runs
    routes/dynos/{app}/{instance}     address of every web dyno that is up

Level-based: every pass compares the supervisor's snapshot with what was last
written and writes only the difference. All keys share one lease, so when the
agent (or its host) dies, they all vanish one TTL later: routers stop sending
traffic there and the scheduler replaces the dynos elsewhere. A controller
outage touches none of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from agent.model import DynoState, DynoStatus
from slipway import errors
from slipway import log as slog
from slipway.aio import wait_set
from slipway.backoff import Backoff
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.records import NodeRecord, StatusRecord, route_value

log = slog.get("agent.presence")


def desired_records(
    node: str, address: str, dynos: list[DynoStatus], keys: Keys
) -> dict[bytes, bytes]:
    """Pure: the status and route keys this node should have in etcd right now."""
    out: dict[bytes, bytes] = {}
    for d in dynos:
        status = StatusRecord(
            app=d.app,
            name=d.name,
            instance_id=d.instance_id,
            node=node,
            process_type=d.process_type,
            release=d.release,
            state=str(d.state),
            port=d.port,
            address=address,
            restarts=d.restarts,
            exit_status=-1 if d.exit_status is None else d.exit_status,
            memory_limit_bytes=d.memory_limit_bytes,
            changed_at=d.changed_at,
            started_at=d.started_at,
            reason=d.reason,
            container_id=d.container_id,
        )
        out[keys.status(d.app, d.instance_id)] = status.encode()
        if d.process_type == "web" and d.state == DynoState.UP and d.port and not d.stopping:
            out[keys.route_dyno(d.app, d.instance_id)] = route_value(
                d.app, d.name, f"{address}:{d.port}", node, d.release
            )
    return out


class Presence:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        record: NodeRecord,
        snapshot: Callable[[], list[DynoStatus]],
        *,
        ttl: int = 10,
        interval: float = 0.2,
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.record = record
        self.snapshot = snapshot
        self.ttl = ttl
        self.interval = interval
        self.wake = asyncio.Event()
        self._written: dict[bytes, bytes] = {}
        self._lease_id: int | None = None
        self.registered = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            try:
                await self._session()
            except errors.SlipwayError as exc:
                log.warning("etcd presence lost; retrying", node=self.record.name, error=str(exc))
            self._lease_id = None
            self._written = {}
            self.registered.clear()
            await asyncio.sleep(backoff.next())

    async def _session(self) -> None:
        lease = await self.etcd.lease(self.ttl)
        self._lease_id = lease.id
        record = replace(self.record, started_at=self.record.started_at or time.time())
        await self.etcd.put(self.keys.node(record.name), record.encode(), lease=lease.id)
        self.registered.set()
        log.info("node present in etcd", node=record.name, ttl=self.ttl)
        last_refresh = time.monotonic()
        while True:
            await self._sync(lease.id)
            now = time.monotonic()
            if now - last_refresh >= self.ttl / 3:
                if await self.etcd.refresh_lease(lease.id) <= 0:
                    raise errors.Unavailable("the node's lease expired")
                last_refresh = now
            try:
                await wait_set(self.wake, self.interval)
            except TimeoutError:
                pass
            self.wake.clear()

    async def _sync(self, lease_id: int) -> None:
        want = desired_records(self.record.name, self.record.address, self.snapshot(), self.keys)
        for key, value in want.items():
            if self._written.get(key) != value:
                await self.etcd.put(key, value, lease=lease_id)
                self._written[key] = value
        for key in [k for k in self._written if k not in want]:
            await self.etcd.delete(key)
            del self._written[key]

    async def withdraw(self) -> None:
        """On a clean shutdown that stops dynos: take the routes away at once."""
        if self._lease_id is not None:
            await self.etcd.revoke_lease(self._lease_id)
