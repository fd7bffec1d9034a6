"""Automated certificates over ACME HTTP-01, driven by the leader, level-based.

Each pass reads the apps with automated certificates on, their domains, the
ACME certificates they hold and each domain's status record, asks the pure
:func:`controller.core.acme.plan` what is due, and orders those one by one:
the challenge's key authorization goes to ``routes/acme/{token}`` (under a
lease, so a leader that dies mid-order leaves nothing behind) where every
router answers it, the CA validates, and the issued chain becomes the
domain's ``acme-*`` certificate (controller/store/domains.py). A failure
is kept in the status record, shown by ``certs:auto``, and retried after a
doubling delay. Off unless the controller is given an ACME directory.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass

from controller.bus.acme import AcmeClient, AcmeError, key_pem, load_key, new_account_key
from controller.core import acme as core
from controller.core.acme import AcmePlan, AcmeStatus
from controller.loops.leader import Leadership
from controller.store.acme import AcmeStore
from controller.store.domains import Domains
from slipway import errors
from slipway import log as slog
from slipway.clock import Clock, SystemClock

log = slog.get("controller.acme")

# A challenge record outlives no order: the CA is done with it well within this.
CHALLENGE_TTL = 600


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    contact: str = ""
    context: ssl.SSLContext | None = None
    # Time for every router to see a challenge in etcd before the CA is asked
    # to check it (their watch delivers changes within milliseconds on one site).
    propagation: float = 1.0
    poll_interval: float = 1.0


class AcmeLoop:
    def __init__(
        self,
        domains: Domains,
        store: AcmeStore,
        leadership: Leadership,
        settings: AcmeSettings,
        *,
        interval: float = 300.0,
        clock: Clock = SystemClock(),
    ) -> None:
        self.domains = domains
        self.store = store
        self.etcd = store.etcd
        self.keys = store.keys
        self.leadership = leadership
        self.settings = settings
        self.interval = interval
        self.clock = clock
        self._wake = asyncio.Event()
        self._client: AcmeClient | None = None
        self._leases: dict[str, int] = {}
        self.issued = 0

    def wake(self) -> None:
        """A domain was added or automated certificates turned on: look again now."""
        self._wake.set()

    async def run(self) -> None:
        await self.leadership.run_while_leading(
            "acme", self.step, wake=self._wake, every=self.interval, settle=0.2
        )

    async def step(self) -> AcmePlan:
        domains: dict[str, list[str]] = {}
        held: dict[tuple[str, str], float] = {}
        for app in await self.store.enabled_apps():
            try:
                view = await self.domains.view(app)
            except errors.NotFound:
                continue  # destroyed meanwhile
            domains[app] = list(view.domains)
            for cert in view.uploaded.values():
                if cert.auto:
                    for host in cert.leaf.names:
                        held[(app, host)] = cert.leaf.not_after
        statuses = await self.store.statuses()
        now = self.clock.now()
        todo = core.plan(domains, held, statuses, now)
        if not self.leadership.is_leader:
            return todo
        for app, host in todo.forget:
            await self.store.delete_status(app, host)
        for app, host in todo.refuse:
            status = statuses.get((app, host)) or AcmeStatus(host)
            await self.store.put_status(app, core.failed(status, core.WILDCARD_REASON, now))
        for app, host in todo.order:
            await self._order(app, host, statuses.get((app, host)) or AcmeStatus(host))
        return todo

    async def _order(self, app: str, host: str, status: AcmeStatus) -> None:
        now = self.clock.now()
        await self.store.put_status(
            app, AcmeStatus(host, core.PENDING, status.last_error, status.attempts, 0.0,
                            status.not_after, now)
        )  # fmt: skip
        try:
            client = await self._account()
            chain, key = await client.issue(host, self._publish, self._withdraw)
            record = await self.domains.put_auto_cert(app, host, chain, key)
        except (AcmeError, errors.SlipwayError) as exc:
            log.warning("certificate order failed", app=app, host=host, error=str(exc))
            await self.store.put_status(app, core.failed(status, str(exc), self.clock.now()))
            return
        self.issued += 1
        log.info("certificate issued", app=app, host=host, not_after=record.leaf.not_after)
        await self.store.put_status(app, core.issued(host, record.leaf.not_after, self.clock.now()))

    async def _account(self) -> AcmeClient:
        """The cluster's account at the configured CA: kept in etcd, made once."""
        if self._client is not None:
            return self._client
        sealer = self.domains.require_sealer()
        settings = self.settings
        stored = await self.store.account()
        if stored is not None and stored.directory == settings.directory:
            key = load_key(sealer.open(stored.key_sealed))
        else:
            key = new_account_key()
        client = AcmeClient(
            settings.directory,
            key,
            context=settings.context,
            contact=settings.contact,
            poll_interval=settings.poll_interval,
        )
        if stored is not None and stored.directory == settings.directory:
            client.account_url = stored.url
        else:
            url = await client.register()
            await self.store.put_account(settings.directory, url, key_pem(key), sealer)
            log.info("acme account registered", directory=settings.directory, account=url)
        self._client = client
        return client

    async def _publish(self, token: str, key_authorization: str) -> None:
        lease = await self.etcd.lease(CHALLENGE_TTL)
        record = json.dumps({"key_authorization": key_authorization}).encode()
        self._leases[token] = lease.id
        await self.etcd.put(self.keys.route_challenge(token), record, lease=lease.id)
        await asyncio.sleep(self.settings.propagation)

    async def _withdraw(self, token: str) -> None:
        lease = self._leases.pop(token, None)
        if lease is not None:
            await self.etcd.revoke_lease(lease)  # its challenge record goes with it
