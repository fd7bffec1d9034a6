"""HTTPS certificates for every app's default host, made from the cluster CA
(leader only, and only on a controller given ``ca_dir``, as ``slipway up``'s is).

A wildcard ``*.BASE_DOMAIN`` cannot cover a one-label base domain such as
``localhost`` (clients refuse wildcards with a single label after the star),
so each app gets a certificate of its own for ``APP.BASE_DOMAIN``, written to
``routes/certs/`` where every router reads it. Level-based: :func:`plan` is
pure, comparing the apps with the records there, and :class:`EdgeCertificates`
applies it: a missing certificate is made, one within ``renew_before`` of its
end is made again, and one made here for an app that is gone is deleted.
Certificates that someone else put there (an operator's) are never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.loops.leader import Leadership
from controller.store.state import State
from slipway import certs, errors, pki
from slipway import log as slog
from slipway.clock import Clock, SystemClock

log = slog.get("controller.edge_certs")

DAYS = 90
RENEW_BEFORE = 30 * 86400.0


@dataclass(frozen=True)
class Held:
    """A record found under routes/certs/."""

    not_after: float
    made_here: bool


@dataclass
class EdgePlan:
    make: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def plan(
    apps: Iterable[str],
    held: Mapping[str, Held],
    base_domain: str,
    now: float,
    *,
    renew_before: float = RENEW_BEFORE,
) -> EdgePlan:
    wanted = {f"{app}.{base_domain}" for app in apps}
    out = EdgePlan()
    for host in sorted(wanted):
        record = held.get(host)
        if record is None or (record.made_here and record.not_after - now < renew_before):
            out.make.append(host)
    out.remove = sorted(h for h, r in held.items() if r.made_here and h not in wanted)
    return out


class EdgeCertificates:
    def __init__(
        self,
        state: State,
        leadership: Leadership,
        ca_dir: Path,
        base_domain: str,
        *,
        interval: float = 60.0,
        clock: Clock = SystemClock(),
    ) -> None:
        self.state = state
        self.leadership = leadership
        self.ca_dir = ca_dir
        self.base_domain = base_domain
        self.interval = interval
        self.clock = clock
        self._wake = asyncio.Event()
        self.made = 0
        # The records it reads back hold keys sealed with the CA's cluster key.
        self.sealer = pki.load_ca(ca_dir).sealer()

    def wake(self) -> None:
        """An app was created or destroyed: look again now."""
        self._wake.set()

    async def run(self) -> None:
        await self.leadership.run_while_leading(
            "edge-certs", self.step, wake=self._wake, every=self.interval, settle=0.2
        )

    async def _held(self) -> dict[str, Held]:
        prefix = self.state.keys.route_cert("")
        kvs, _ = await self.state.etcd.get_prefix(prefix)
        held: dict[str, Held] = {}
        for kv in kvs:
            host = kv.key[len(prefix) :].decode(errors="replace")
            try:
                pair, leaf = certs.read(kv.value, self.sealer)
            except errors.InvalidArgument:
                continue  # not ours to mend: the routers skip it too
            held[host] = Held(leaf.not_valid_after_utc.timestamp(), pair.made_here)
        return held

    async def step(self) -> EdgePlan:
        apps = [a.name for a in await self.state.list_apps()]
        todo = plan(apps, await self._held(), self.base_domain, self.clock.now())
        if not self.leadership.is_leader or not (todo.make or todo.remove):
            return todo
        ca = pki.load_ca(self.ca_dir)
        for host in todo.make:
            chain, key = pki.edge_certificate(ca, [host], days=DAYS)
            record = certs.encode(certs.Pair(chain, key, made_here=True), ca.sealer())
            await self.state.etcd.put(self.state.keys.route_cert(host), record)
            self.made += 1
        for host in todo.remove:
            await self.state.etcd.delete(self.state.keys.route_cert(host))
        log.info("edge certificates", made=todo.make, removed=todo.remove)
        return todo
