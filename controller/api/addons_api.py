"""The add-on RPCs of PlatformService (mixed into controller.api.platform.PlatformAPI).

The RPCs only change records; the leader's add-on loop (controller/loops/addons.py)
talks to providers, except for what a user waits for by nature: details
(``pg:info``) and a service's own actions (``pg:credentials:rotate``,
``pg:reset``), asked of the provider directly by the controller serving the call.
An add-on is visible through an app only when that app owns it or has it
attached: naming another app's add-on reads as "not found".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import TypeAlias

import grpc

from controller.api.auth import Access
from controller.api.convert import timestamp
from controller.api.endpoint import unary
from controller.bus.addon_provider import ProviderClient
from controller.core import addons as core
from controller.core.access import Identity
from controller.core.addons import AddonRecord, AttachmentRecord, Outcome, ServiceRecord
from controller.store.addons import Addons
from slipway import errors
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext


def service_message(record: ServiceRecord) -> pb.AddonService:
    default = record.default_attachment or record.config_vars_prefix
    shown = core.attached_vars(
        record.config_vars_prefix, {v: "" for v in record.config_vars}, default
    )
    return pb.AddonService(
        name=record.name,
        human_name=record.human_name,
        description=record.description,
        plans=[
            pb.AddonPlan(
                name=p.name,
                description=p.description,
                price_cents_per_month=p.price_cents_per_month,
                default=p.default,
            )
            for p in record.plans
        ],
        config_vars=sorted(shown),
        default_attachment=default,
    )


def attachment_message(record: AttachmentRecord) -> pb.AddonAttachment:
    return pb.AddonAttachment(
        app=record.app,
        name=record.name,
        addon=record.addon_name,
        addon_id=record.addon_id,
        config_vars=record.config_vars,
        released=bool(record.applied_digest),
        created_at=timestamp(record.created_at),
    )


def addon_message(record: AddonRecord, attachments: list[AttachmentRecord]) -> pb.Addon:
    msg = pb.Addon(
        id=record.id,
        name=record.name,
        service=record.service,
        plan=record.plan,
        applied_plan=record.applied_plan,
        app=record.app,
        state=record.state,
        message=record.message,
        error=record.error,
        attachments=[attachment_message(a) for a in attachments],
        created_at=timestamp(record.created_at),
        created_by=record.created_by,
        provider_id=record.provider_id,
        attempts=record.attempts,
        waiting_for_provider=bool(record.accepted_at),
    )
    if record.next_attempt_at:
        msg.next_attempt_at.CopyFrom(timestamp(record.next_attempt_at))
    if record.provisioned_at:
        msg.provisioned_at.CopyFrom(timestamp(record.provisioned_at))
    return msg


class AddonRPCs:
    access: Access
    addons: Addons
    # Wakes the leader's add-on loop when it runs in this process.
    addons_wake: Callable[[], None]
    addon_provider: ProviderClient

    def _log(self, app: str, *messages: str) -> None: ...

    async def _visible(self, app: str, ref: str) -> tuple[AddonRecord, list[AttachmentRecord]]:
        """The add-on ``ref`` as seen from ``app``: it must own it or have it attached."""
        await self.addons.state.get_app(app)
        addon = await self.addons.find(ref, app)
        attachments = await self.addons.attachments_of(addon.id)
        if addon.app != app and all(a.app != app for a in attachments):
            raise errors.NotFound(
                f"add-on {ref!r} not found on app {app!r}", reason="addon_not_found"
            )
        return addon, attachments

    async def _owned(self, app: str, ref: str, action: str) -> AddonRecord:
        addon, _ = await self._visible(app, ref)
        if addon.app != app:
            raise errors.FailedPrecondition(
                f"add-on {addon.name} belongs to app {addon.app!r}; {action} it there "
                f"(-a {addon.app}), or detach it from {app!r} with "
                f"slipway addons:detach {addon.name} -a {app}",
                reason="addon_not_owned",
            )
        return addon

    async def _answer(self, addon_id: str, release: int = 0) -> pb.AddonResponse:
        record = await self.addons.get(addon_id)
        if record is None:
            raise errors.NotFound("the add-on is gone", reason="addon_not_found")
        attachments = await self.addons.attachments_of(addon_id)
        return pb.AddonResponse(addon=addon_message(record, attachments), release_version=release)

    @unary
    async def ListAddonServices(
        self, request: pb.ListAddonServicesRequest, context: Ctx, who: Identity
    ) -> pb.ListAddonServicesResponse:
        services = await self.addons.services()
        return pb.ListAddonServicesResponse(services=[service_message(s) for s in services])

    @unary
    async def ListAddons(
        self, request: pb.ListAddonsRequest, context: Ctx, who: Identity
    ) -> pb.ListAddonsResponse:
        await self.addons.state.get_app(request.app)
        attachments = await self.addons.attachments()
        addons = await self.addons.all_addons()
        mine = {a.addon_id for a in attachments if a.app == request.app}
        shown = [a for a in addons if a.app == request.app or a.id in mine]
        return pb.ListAddonsResponse(
            addons=[addon_message(a, [t for t in attachments if t.addon_id == a.id]) for a in shown]
        )

    @unary
    async def CreateAddon(
        self, request: pb.CreateAddonRequest, context: Ctx, who: Identity
    ) -> pb.AddonResponse:
        addon, attachment = await self.addons.create(
            request.app,
            request.service,
            as_name=request.as_name,
            options=dict(request.options),
            actor=who.actor,
        )
        self._log(
            request.app,
            f"Create {addon.name} ({addon.service}:{addon.plan}) as {attachment.name} "
            f"by {who.actor}",
        )
        self.addons_wake()
        return await self._answer(addon.id)

    @unary
    async def GetAddon(
        self, request: pb.GetAddonRequest, context: Ctx, who: Identity
    ) -> pb.AddonResponse:
        addon, attachments = await self._visible(request.app, request.addon)
        return pb.AddonResponse(addon=addon_message(addon, attachments))

    @unary
    async def AttachAddon(
        self, request: pb.AttachAddonRequest, context: Ctx, who: Identity
    ) -> pb.AddonResponse:
        await self.addons.state.get_app(request.app)
        addon = await self.addons.find(request.addon)
        # Attaching hands the add-on's credentials to another app: the caller must
        # be able to manage the app that owns it as well.
        await self.access.check(who, "AttachAddon", addon.app)
        attachment, release = await self.addons.attach(
            addon, request.app, request.as_name, who.actor
        )
        self._log(request.app, f"Attach {attachment.name} ({addon.ref}) by {who.actor}")
        self.addons_wake()
        return await self._answer(addon.id, release.version if release else 0)

    @unary
    async def DetachAddon(
        self, request: pb.DetachAddonRequest, context: Ctx, who: Identity
    ) -> pb.DetachAddonResponse:
        app = request.app
        addon, attachments = await self._visible(app, request.attachment)
        here = [a for a in attachments if a.app == app]
        chosen = next((a for a in here if a.name == request.attachment), here[0] if here else None)
        if chosen is None:
            raise errors.NotFound(
                f"add-on {addon.name} is not attached to {app!r}", reason="attachment_not_found"
            )
        if addon.app == app and len(here) == 1:
            raise errors.FailedPrecondition(
                f"{app!r} owns {addon.name}: its attachment goes when the add-on does "
                f"(slipway addons:destroy {addon.name} -a {app} --confirm {app})",
                reason="owner_attachment",
            )
        release = await self.addons.detach(app, chosen.name, actor=who.actor)
        self._log(app, f"Detach {chosen.name} ({addon.ref}) by {who.actor}")
        return pb.DetachAddonResponse(
            attachment=attachment_message(chosen), release_version=release.version if release else 0
        )

    @unary
    async def UpgradeAddon(
        self, request: pb.UpgradeAddonRequest, context: Ctx, who: Identity
    ) -> pb.AddonResponse:
        addon = await self._owned(request.app, request.addon, "change its plan")
        service = await self.addons.service(addon.service)
        name = request.plan.partition(":")[2] if ":" in request.plan else request.plan
        if not name:
            raise errors.InvalidArgument("no plan given: slipway addons:plans " + addon.service)
        plan = service.plan(name)

        def change(current: AddonRecord) -> AddonRecord | None:
            if current.state != core.PROVISIONED:
                raise errors.FailedPrecondition(
                    f"add-on {current.name} is {current.state}; change its plan once it is "
                    "provisioned",
                    reason="addon_not_provisioned",
                )
            if current.plan == plan.name:
                raise errors.FailedPrecondition(
                    f"add-on {current.name} is already on {current.service}:{plan.name}",
                    reason="same_plan",
                )
            return replace(current, plan=plan.name, attempts=0, next_attempt_at=0.0, error="")

        await self.addons.update(addon.id, change)
        self._log(request.app, f"Change {addon.name} to {addon.service}:{plan.name} by {who.actor}")
        self.addons_wake()
        return await self._answer(addon.id)

    @unary
    async def DestroyAddon(
        self, request: pb.DestroyAddonRequest, context: Ctx, who: Identity
    ) -> pb.AddonResponse:
        addon = await self._owned(request.app, request.addon, "destroy")
        if request.confirm != request.app:
            raise errors.FailedPrecondition(
                f"destroying {addon.name} needs confirmation: pass --confirm {request.app}",
                reason="confirmation_required",
            )
        answer = await self._answer(addon.id)
        await self.addons.update(
            addon.id, lambda a: a if a.state == core.DEPROVISIONING else core.deprovision(a)
        )
        self._log(request.app, f"Destroy {addon.name} by {who.actor}")
        self.addons_wake()
        answer.addon.state = core.DEPROVISIONING
        return answer

    @unary
    async def RetryAddon(
        self, request: pb.RetryAddonRequest, context: Ctx, who: Identity
    ) -> pb.AddonResponse:
        addon = await self._owned(request.app, request.addon, "retry")
        await self.addons.update(addon.id, core.retried)
        self._log(request.app, f"Retry {addon.name} by {who.actor}")
        self.addons_wake()
        return await self._answer(addon.id)

    async def _provisioned(self, app: str, ref: str) -> tuple[AddonRecord, ServiceRecord]:
        addon, _ = await self._visible(app, ref)
        if addon.state != core.PROVISIONED:
            raise errors.FailedPrecondition(
                f"add-on {addon.name} is {addon.state}; try again once it is provisioned "
                f"(slipway addons:wait {addon.name} -a {app})",
                reason="addon_not_provisioned",
            )
        return addon, await self.addons.service(addon.service)

    @unary
    async def GetAddonDetails(
        self, request: pb.GetAddonDetailsRequest, context: Ctx, who: Identity
    ) -> pb.AddonDetailsResponse:
        addon, service = await self._provisioned(request.app, request.addon)
        details = await self.addon_provider.details(service, addon)
        attachments = await self.addons.attachments_of(addon.id)
        return pb.AddonDetailsResponse(
            addon=addon_message(addon, attachments), details_json=json.dumps(details)
        )

    @unary
    async def RunAddonAction(
        self, request: pb.RunAddonActionRequest, context: Ctx, who: Identity
    ) -> pb.RunAddonActionResponse:
        action = core.action_name(request.action)
        addon = await self._owned(request.app, request.addon, action)
        if request.confirm != request.app:
            raise errors.FailedPrecondition(
                f"{action} on {addon.name} needs confirmation: pass --confirm {request.app}",
                reason="confirmation_required",
            )
        addon, service = await self._provisioned(request.app, request.addon)
        argument = core.action_argument(request.argument)
        answer = await self.addon_provider.action(service, addon, action, argument)
        if answer.outcome is not Outcome.DONE:
            raise errors.Unavailable(
                f"{service.name} did not {action} {addon.name}: {answer.message}",
                reason="provider_refused" if answer.outcome is Outcome.REFUSED else "",
            )
        self._log(request.app, f"Run {action} on {addon.name} by {who.actor}")
        versions = []
        if answer.config is not None:
            config = answer.config
            await self.addons.update(addon.id, lambda current: replace(current, config=config))
            # Every attached app gets the new values now (the leader would, a tick later).
            for attachment in await self.addons.attachments_of(addon.id):
                release = await self.addons.sync(attachment.app, attachment.name, actor=who.actor)
                if release is not None:
                    versions.append(release.version)
        self.addons_wake()
        fresh = await self._answer(addon.id)
        return pb.RunAddonActionResponse(
            addon=fresh.addon, message=answer.message, release_versions=versions
        )
