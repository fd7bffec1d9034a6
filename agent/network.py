"""Each dyno's own network: attach before the container starts, detach after it ends.

A thin layer over ``slipway.cni.SandboxNetwork`` that knows dynos:

    attach(record)    netns + CNI ADD (web dynos: host port $PORT -> dyno:$PORT);
                      the firewall learns the dyno before its container starts
    detach(record)    CNI DEL, netns removed, the dyno's rules gone
    check(record)     CHECK of an adopted dyno (agent restart)
    sync(force)       reconcile the nftables table with every dyno that has an
                      address (level-based: the plan is rebuilt from the records)

Routes in etcd keep naming ``advertise-address:$PORT``: portmap maps that host
port to the dyno's address, so routers on any host reach it unchanged.

The add-ons hook: ``grants`` returns the ``AddonGrant``s (app, address, port)
in force; every dyno of a granted app may open TCP connections to that
address and port; agent/addon_grants.py follows them in etcd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agent.records import DynoRecord
from slipway import log
from slipway.cni import AddonGrant, Sandboxed, SandboxNetwork

logger = log.get("agent.network")

# How often the table is rewritten even when the plan is unchanged (heals a flush).
HEAL_INTERVAL = 30.0


def sandboxes(records: Iterable[DynoRecord]) -> tuple[Sandboxed, ...]:
    """Pure: what the firewall must know of the dynos that have an address."""
    out = []
    for r in records:
        if r.address:
            port = r.port if r.spec.is_web else 0
            out.append(Sandboxed(address=r.address, app=r.spec.app, web_port=port))
    return tuple(sorted(out, key=lambda s: s.address))


class DynoNetwork:
    def __init__(self, net: SandboxNetwork) -> None:
        self.net = net
        # Set by the supervisor: the records of every dyno on this node.
        self.records: Callable[[], Iterable[DynoRecord]] = lambda: ()
        # The grants in force (app -> address:port): agent/addon_grants.py.
        self.grants: Callable[[], Iterable[AddonGrant]] = lambda: ()

    def prepare(self) -> None:
        self.net.prepare()

    async def attach(self, record: DynoRecord) -> str:
        """The dyno's netns path for its bundle; ``record.address`` is set."""
        att = await self.net.attach(record.container_id, port=record.port)
        record.address = att.address
        record.netns = att.netns
        try:
            await self.sync()
        except Exception:
            await self.detach(record)
            raise
        return str(att.netns_path)

    async def detach(self, record: DynoRecord) -> None:
        att = self.net.load(record.container_id)
        if att is not None:
            await self.net.detach(att)
        record.address = record.netns = ""
        await self.sync()

    async def check(self, record: DynoRecord) -> None:
        att = self.net.load(record.container_id)
        if att is None:
            from slipway.cni import CniError

            raise CniError("no network attachment on record")
        await self.net.check(att)

    async def remove_orphans(self, known: set[str]) -> None:
        for cid in await self.net.detach_all_except(known):
            logger.warning("removed network of a dyno with no record", container=cid)

    async def sync(self, *, force: bool = False) -> None:
        spec = self.net.firewall_spec(sandboxes(self.records()), tuple(self.grants()))
        if await self.net.apply_firewall(spec, force=force):
            logger.debug("firewall applied", dynos=len(spec.sandboxes))
