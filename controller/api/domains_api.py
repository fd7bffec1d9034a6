"""The custom domain and certificate RPCs of PlatformService (mixed into
controller.api.platform.PlatformAPI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import grpc

from controller.api.convert import timestamp
from controller.api.endpoint import unary
from controller.core import acme
from controller.core.access import Identity
from controller.core.acme import AcmeStatus
from controller.core.domains import CertRecord, DomainRecord
from controller.store.acme import AcmeStore
from controller.store.domains import Domains
from slipway import errors
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext


def domain_message(
    record: DomainRecord, cname: str, certificate: str = "", acm: AcmeStatus | None = None
) -> pb.Domain:
    return pb.Domain(
        id=record.id,
        app=record.app,
        hostname=record.hostname,
        kind="custom",
        cname=cname,
        status="succeeded",
        certificate=certificate,
        created_at=timestamp(record.created_at),
        acm_status=acm.status if acm else "",
        acm_status_reason=acm.last_error if acm and acm.status == acme.FAILING else "",
    )


def auto_domain(host: str, status: AcmeStatus | None) -> pb.AutoCertDomain:
    status = status or AcmeStatus(host)
    return pb.AutoCertDomain(
        hostname=host,
        status=status.status,
        last_error=status.last_error,
        attempts=status.attempts,
        next_attempt_at=timestamp(status.next_attempt) if status.status == acme.FAILING else None,
        expires_at=timestamp(status.not_after) if status.not_after else None,
        updated_at=timestamp(status.updated_at) if status.updated_at else None,
    )


def certificate_message(record: CertRecord, served: list[str]) -> pb.Certificate:
    return pb.Certificate(
        name=record.name,
        app=record.app,
        cert_domains=list(record.leaf.names),
        domains=sorted(served),
        subject=record.leaf.subject,
        issuer=record.leaf.issuer,
        self_signed=record.leaf.self_signed,
        starts_at=timestamp(record.leaf.not_before),
        expires_at=timestamp(record.leaf.not_after),
        created_at=timestamp(record.created_at),
        certificate_chain=record.chain,
    )


class DomainRPCs:
    domains: Domains
    acme: AcmeStore
    # Set by the server when it runs the ACME loop (an ACME directory is configured).
    acme_wake: Callable[[], None] | None

    def _log(self, app: str, *messages: str) -> None: ...

    def _default_host(self, app: str) -> str:
        return f"{app}.{self.domains.base_domain}"

    @unary
    async def ListDomains(
        self, request: pb.ListDomainsRequest, context: Ctx, who: Identity
    ) -> pb.ListDomainsResponse:
        view = await self.domains.view(request.app)
        default = pb.Domain(
            id="",
            app=request.app,
            hostname=self._default_host(request.app),
            kind="default",
            status="succeeded",
            created_at=timestamp(view.app.created_at),
        )
        acm, served = await self._acm(request.app), view.certificate_of()
        custom = [self._domain(served, r, acm) for r in view.sorted_domains()]
        return pb.ListDomainsResponse(domains=[default, *custom])

    async def _acm(self, app: str) -> dict[str, AcmeStatus] | None:
        """Each domain's automated certificate status; None when they are off."""
        if not await self.acme.enabled(app):
            return None
        return {host: s for (_, host), s in (await self.acme.statuses(app)).items()}

    def _domain(
        self, served: dict[str, str], record: DomainRecord, acm: dict[str, AcmeStatus] | None
    ) -> pb.Domain:
        """``served``: EdgeView.certificate_of; ``acm``: _acm."""
        status = None if acm is None else acm.get(record.hostname, AcmeStatus(record.hostname))
        certificate = served.get(record.hostname, "")
        return domain_message(record, self._default_host(record.app), certificate, status)

    async def _domain_response(self, app: str, host: str) -> pb.DomainResponse:
        view = await self.domains.view(app)
        record = view.domain(host)
        acm = await self._acm(app)
        return pb.DomainResponse(domain=self._domain(view.certificate_of(), record, acm))

    @unary
    async def GetDomain(
        self, request: pb.GetDomainRequest, context: Ctx, who: Identity
    ) -> pb.DomainResponse:
        return await self._domain_response(request.app, self.domains.host(request.hostname))

    @unary
    async def AddDomain(
        self, request: pb.AddDomainRequest, context: Ctx, who: Identity
    ) -> pb.DomainResponse:
        record = await self.domains.add_domain(request.app, request.hostname)
        self._log(request.app, f"Add domain {record.hostname} by {who.actor}")
        if self.acme_wake is not None:
            self.acme_wake()
        return await self._domain_response(request.app, record.hostname)

    @unary
    async def RemoveDomain(
        self, request: pb.RemoveDomainRequest, context: Ctx, who: Identity
    ) -> pb.DomainResponse:
        record = await self.domains.remove_domain(request.app, request.hostname)
        self._log(request.app, f"Remove domain {record.hostname} by {who.actor}")
        return pb.DomainResponse(domain=domain_message(record, self._default_host(request.app)))

    @unary
    async def ListCertificates(
        self, request: pb.ListCertificatesRequest, context: Ctx, who: Identity
    ) -> pb.ListCertificatesResponse:
        view = await self.domains.view(request.app)
        served = view.served_by()
        return pb.ListCertificatesResponse(
            certificates=[
                certificate_message(r, served.get(r.name, [])) for r in view.sorted_certs()
            ]
        )

    @unary
    async def GetCertificate(
        self, request: pb.GetCertificateRequest, context: Ctx, who: Identity
    ) -> pb.CertificateResponse:
        return await self._certificate_response(request.app, request.name)

    async def _certificate_response(self, app: str, name: str) -> pb.CertificateResponse:
        view = await self.domains.view(app)
        record = view.cert(name)
        return pb.CertificateResponse(
            certificate=certificate_message(record, view.served_by().get(record.name, []))
        )

    @unary
    async def AddCertificate(
        self, request: pb.AddCertificateRequest, context: Ctx, who: Identity
    ) -> pb.CertificateResponse:
        record = await self.domains.add_cert(
            request.app, request.certificate_chain, request.private_key
        )
        self._log(request.app, f"Add certificate {record.name} by {who.actor}")
        return await self._certificate_response(request.app, record.name)

    @unary
    async def RemoveCertificate(
        self, request: pb.RemoveCertificateRequest, context: Ctx, who: Identity
    ) -> pb.CertificateResponse:
        record = await self.domains.remove_cert(request.app, request.name)
        self._log(request.app, f"Remove certificate {record.name} by {who.actor}")
        return pb.CertificateResponse(certificate=certificate_message(record, []))

    async def _auto_response(self, app: str) -> pb.AutoCertsResponse:
        acm = await self._acm(app)
        if acm is None:
            return pb.AutoCertsResponse(enabled=False)
        hosts = [d.hostname for d in (await self.domains.view(app)).sorted_domains()]
        return pb.AutoCertsResponse(
            enabled=True, domains=[auto_domain(h, acm.get(h)) for h in hosts]
        )

    @unary
    async def GetAutoCerts(
        self, request: pb.GetAutoCertsRequest, context: Ctx, who: Identity
    ) -> pb.AutoCertsResponse:
        return await self._auto_response(request.app)

    @unary
    async def EnableAutoCerts(
        self, request: pb.EnableAutoCertsRequest, context: Ctx, who: Identity
    ) -> pb.AutoCertsResponse:
        if self.acme_wake is None:
            raise errors.FailedPrecondition(
                "this platform has no ACME server configured; the operator sets "
                "acme_directory in the controller's config (certs:add still works)",
                reason="no_acme",
            )
        self.domains.require_sealer()
        if await self.acme.enable(request.app):
            self._log(request.app, f"Enable automated certificates by {who.actor}")
        self.acme_wake()
        return await self._auto_response(request.app)

    @unary
    async def DisableAutoCerts(
        self, request: pb.DisableAutoCertsRequest, context: Ctx, who: Identity
    ) -> pb.AutoCertsResponse:
        if await self.acme.disable(request.app):
            self._log(request.app, f"Disable automated certificates by {who.actor}")
        await self.domains.remove_auto_certs(request.app)
        return await self._auto_response(request.app)
