"""Custom domains and uploaded certificates in etcd (any controller).

Every change to an app's domains or certificates is one transaction: the
app's own records (``domains/{app}/``, ``appcerts/{app}/``), what routers read
(``routes/domains/{host}``, ``routes/certs/{host}``) and a bump of
``edgeseq/{app}``, guarded by that counter's revision, so two changes to one
app never interleave and routers never see a domain without the certificate
it was given. A host name is claimed by creating ``routes/domains/{host}``:
the transaction fails if another app holds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.core import domains as core
from controller.core.domains import CertRecord, DomainRecord
from controller.core.models import AppRecord
from controller.store.state import State
from slipway import certs, errors
from slipway.sealing import Sealer

_ATTEMPTS = 20


@dataclass
class EdgeView:
    """An app's domains and certificates as read, and what the routers serve for them."""

    app: AppRecord
    seq_revision: int
    domains: dict[str, DomainRecord]
    uploaded: dict[str, CertRecord]
    # host -> (certificate name, chain) of its routes/certs record ("" name: not an upload's)
    served: dict[str, tuple[str, str]]

    def sorted_domains(self) -> list[DomainRecord]:
        return sorted(self.domains.values(), key=lambda d: d.hostname)

    def sorted_certs(self) -> list[CertRecord]:
        return sorted(self.uploaded.values(), key=lambda c: c.created_at)

    def domain(self, host: str) -> DomainRecord:
        """``host`` as stored (see Domains.host)."""
        if host not in self.domains:
            name = self.app.name
            raise errors.NotFound(f"{name} has no domain {host}; see `domains -a {name}`")
        return self.domains[host]

    def cert(self, name: str) -> CertRecord:
        if name in self.uploaded:
            return self.uploaded[name]
        app = self.app.name
        if not self.uploaded:
            raise errors.NotFound(f"{app} has no certificates; add one with `certs:add CERT KEY`")
        raise errors.NotFound(
            f"{app} has no certificate {name!r}; it has {', '.join(sorted(self.uploaded))}"
        )

    def certificate_of(self) -> dict[str, str]:
        """Each domain -> the name of the uploaded certificate it is served."""
        return {host: name for host, (name, _) in self.served.items() if name}

    def served_by(self) -> dict[str, list[str]]:
        """Certificate name -> the domains it is served for."""
        out: dict[str, list[str]] = {}
        for host, name in self.certificate_of().items():
            out.setdefault(name, []).append(host)
        return out


@dataclass
class _Change:
    domains: dict[str, DomainRecord]
    uploaded: dict[str, CertRecord]
    compare: list[Any] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)


class Domains:
    def __init__(self, state: State, base_domain: str, sealer: Sealer | None) -> None:
        self.state = state
        self.etcd = state.etcd
        self.keys = state.keys
        self.base_domain = base_domain.strip(".").lower()
        self.sealer = sealer

    # -- reading --------------------------------------------------------------

    def host(self, value: str) -> str:
        """A host name as stored (InvalidArgument for one that is not a custom domain)."""
        return core.hostname(value, self.base_domain)

    async def view(self, app: str) -> EdgeView:
        record = await self.state.get_app(app)
        seq = await self.etcd.get(self.keys.edge_seq(app))
        kvs, _ = await self.etcd.get_prefix(self.keys.domains(app))
        found = [DomainRecord.decode(kv.value) for kv in kvs]
        kvs, _ = await self.etcd.get_prefix(self.keys.app_certs(app))
        uploaded = [CertRecord.decode(kv.value) for kv in kvs]
        served: dict[str, tuple[str, str]] = {}
        for domain in found:
            kv = await self.etcd.get(self.keys.route_cert(domain.hostname))
            if kv is not None:
                served[domain.hostname] = certs.served_upload(kv.value)
        return EdgeView(
            app=record,
            seq_revision=seq.mod_revision if seq else 0,
            domains={d.hostname: d for d in found},
            uploaded={c.name: c for c in uploaded},
            served=served,
        )

    # -- changing -------------------------------------------------------------

    async def add_domain(self, app: str, host: str) -> DomainRecord:
        name = core.hostname(host, self.base_domain)

        def change(view: EdgeView) -> _Change:
            if name in view.domains:
                raise errors.AlreadyExists(f"{name} is already a domain of {app}")
            if len(view.domains) >= core.MAX_DOMAINS_PER_APP:
                raise errors.ResourceExhausted(
                    f"{app} has {len(view.domains)} domains, the most an app may have"
                )
            record = DomainRecord.new(app, name, self.state.clock.now())
            route = self.keys.route_domain(name)
            tx = self.etcd.tx
            return _Change(
                domains={**view.domains, name: record},
                uploaded=view.uploaded,
                compare=[tx.version(route) == 0],
                ops=[
                    tx.put(self.keys.domain(app, name), record.encode()),
                    tx.put(route, json.dumps({"app": app}).encode()),
                ],
            )

        async def refused() -> errors.SlipwayError | None:
            holder = await self.etcd.get(self.keys.route_domain(name))
            if holder is None:
                return None
            return errors.AlreadyExists(
                f"{name} is already in use by another app: a host name belongs to one app "
                "only; remove it from that app first",
                reason="domain_taken",
            )

        view = await self._commit(app, change, refused)
        return view.domains[name]

    async def remove_domain(self, app: str, host: str) -> DomainRecord:
        name = core.hostname(host, self.base_domain)
        removed: list[DomainRecord] = []

        def change(view: EdgeView) -> _Change:
            removed[:] = [view.domain(name)]
            tx = self.etcd.tx
            # The claim was made with the domain's record, in one transaction: it is this app's.
            return _Change(
                domains={h: d for h, d in view.domains.items() if h != name},
                uploaded=view.uploaded,
                ops=[
                    tx.delete(self.keys.domain(app, name)),
                    tx.delete(self.keys.route_domain(name)),
                ],
            )

        await self._commit(app, change)
        return removed[0]

    async def add_cert(self, app: str, chain: bytes, key: bytes) -> CertRecord:
        sealer = self.require_sealer()
        now = self.state.clock.now()
        leaf = core.check_upload(chain, key, now)
        made: list[CertRecord] = []

        def change(view: EdgeView) -> _Change:
            covered = [h for h in view.domains if core.covers(leaf.names, h)]
            if not covered:
                raise errors.FailedPrecondition(
                    f"the certificate ({', '.join(leaf.names)}) covers none of {app}'s "
                    f"domains; add them first with `domains:add HOST -a {app}`",
                    reason="covers_no_domain",
                )
            if len(view.uploaded) >= core.MAX_CERTS_PER_APP:
                raise errors.ResourceExhausted(
                    f"{app} has {len(view.uploaded)} certificates, the most an app may have; "
                    "remove one first"
                )
            record = CertRecord(
                name=core.cert_name(leaf, view.uploaded),
                app=app,
                chain=chain.decode(),
                key_sealed=sealer.seal(key),
                created_at=now,
                leaf=leaf,
            )
            made[:] = [record]
            return _Change(
                domains=view.domains,
                uploaded={**view.uploaded, record.name: record},
                ops=[self.etcd.tx.put(self.keys.app_cert(app, record.name), record.encode())],
            )

        await self._commit(app, change)
        return made[0]

    async def remove_cert(self, app: str, name: str) -> CertRecord:
        removed: list[CertRecord] = []

        def change(view: EdgeView) -> _Change:
            record = view.cert(name)
            removed[:] = [record]
            return _Change(
                domains=view.domains,
                uploaded={n: c for n, c in view.uploaded.items() if n != record.name},
                ops=[self.etcd.tx.delete(self.keys.app_cert(app, record.name))],
            )

        await self._commit(app, change)
        return removed[0]

    async def put_auto_cert(self, app: str, host: str, chain: bytes, key: bytes) -> CertRecord:
        """Keep the certificate ACME issued for ``host`` (replacing the one before)."""
        sealer = self.require_sealer()
        now = self.state.clock.now()
        leaf = core.check_upload(chain, key, now)
        record = CertRecord(
            name=core.auto_cert_name(host),
            app=app,
            chain=chain.decode(),
            key_sealed=sealer.seal(key),
            created_at=now,
            leaf=leaf,
            auto=True,
        )

        def change(view: EdgeView) -> _Change:
            if host not in view.domains:
                raise errors.NotFound(f"{app} no longer has the domain {host}")
            return _Change(
                domains=view.domains,
                uploaded={**view.uploaded, record.name: record},
                ops=[self.etcd.tx.put(self.keys.app_cert(app, record.name), record.encode())],
            )

        await self._commit(app, change)
        return record

    async def remove_auto_certs(self, app: str, keep: set[str] | None = None) -> list[str]:
        """Drop the app's ACME certificates (but those for the hosts in ``keep``)."""
        gone: list[str] = []

        def change(view: EdgeView) -> _Change:
            kept = {core.auto_cert_name(h) for h in keep or set()}
            drop = [c for c in view.uploaded.values() if c.auto and c.name not in kept]
            gone[:] = [c.name for c in drop]
            return _Change(
                domains=view.domains,
                uploaded={n: c for n, c in view.uploaded.items() if c not in drop},
                ops=[self.etcd.tx.delete(self.keys.app_cert(app, c.name)) for c in drop],
            )

        await self._commit(app, change)
        return gone

    def require_sealer(self) -> Sealer:
        if self.sealer is None:
            raise errors.FailedPrecondition(
                "this controller has no cluster key (edge.key in its credentials), so it "
                "cannot keep a private key sealed; re-issue its bundle with "
                "`slipway-controller certs issue --role controller`",
                reason="no_cluster_key",
            )
        return self.sealer

    async def _commit(
        self,
        app: str,
        change: Callable[[EdgeView], _Change],
        refused: Callable[[], Any] | None = None,
    ) -> EdgeView:
        """Apply ``change`` to the app's view and publish what routers must serve
        for the result, in one transaction; retried when another change won."""
        tx = self.etcd.tx
        for _ in range(_ATTEMPTS):
            view = await self.view(app)
            wanted = change(view)
            plan = core.edge_plan(
                wanted.domains, wanted.uploaded.values(), view.served, self.state.clock.now()
            )
            ops = list(wanted.ops)
            for host, cert in plan.put.items():
                ops.append(tx.put(self.keys.route_cert(host), self._route_record(cert)))
            for host in plan.delete:
                ops.append(tx.delete(self.keys.route_cert(host)))
            seq = self.keys.edge_seq(app)
            compare: Sequence[Any] = [
                tx.version(self.keys.app(app)) > 0,
                tx.mod(seq) == view.seq_revision,
                *wanted.compare,
            ]
            if await self.etcd.txn(compare=compare, success=[tx.put(seq, b"1"), *ops]):
                return EdgeView(view.app, view.seq_revision, wanted.domains, wanted.uploaded, {})
            if refused is not None and (why := await refused()) is not None:
                raise why
        raise errors.Conflict(
            f"too many changes to {app}'s domains at once; try again", reason="write_conflict"
        )

    def _route_record(self, cert: CertRecord) -> bytes:
        sealer = self.require_sealer()
        key = sealer.open(cert.key_sealed)
        return certs.encode(certs.Pair(cert.chain.encode(), key, cert=cert.name), sealer)
