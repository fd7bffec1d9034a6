"""Add-on services, add-ons and attachments in etcd (records in controller/core/addons.py).

Each change is one transaction guarded by what it read. An attachment reserves
its config var names in the app record when it is made (``AppRecord.addon_vars``),
so ``config:set`` refuses them atomically from then on; the vars themselves
reach the app's config by a release (:meth:`Addons.sync`) once the add-on is
provisioned, and leave it by another (:meth:`Addons.detach`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from controller.core import addons as core
from controller.core.addons import AddonRecord, AttachmentRecord, ServiceRecord
from controller.core.models import AppRecord, ReleaseRecord, decode_config
from controller.store.state import State
from slipway import errors, records

Writes = dict[bytes, bytes | None]


class _Moved(Exception):
    """An add-on or attachment changed between reading it and committing; read again."""


class Addons:
    def __init__(self, state: State) -> None:
        self.state = state
        self.etcd = state.etcd
        self.keys = state.keys
        self.clock = state.clock

    # -- services ---------------------------------------------------------------

    async def register(self, record: ServiceRecord) -> bool:
        """Store a provider's manifest; True when it is new, False when it replaced one."""
        key = self.keys.addon_service(record.name)
        existed = await self.etcd.get(key) is not None
        await self.etcd.put(key, record.encode())
        return not existed

    async def unregister(self, name: str) -> None:
        service = await self.service(name)
        users = [a.name for a in await self.all_addons() if a.service == service.name]
        if users:
            raise errors.FailedPrecondition(
                f"{len(users)} add-on(s) of {name} still exist ({', '.join(users[:5])}); "
                "destroy them first",
                reason="service_in_use",
            )
        await self.etcd.delete(self.keys.addon_service(name))

    async def services(self) -> list[ServiceRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.addon_services())
        return sorted((ServiceRecord.decode(kv.value) for kv in kvs), key=lambda s: s.name)

    async def service(self, name: str) -> ServiceRecord:
        core.service_name(name)
        kv = await self.etcd.get(self.keys.addon_service(name))
        if kv is None and name == "scheduler":
            # Heroku's scheduler is an add-on; here it is part of the platform.
            raise errors.NotFound(
                "the scheduler needs no add-on on Slipway: add jobs with"
                " `slipway scheduler:create -a APP --every 10m -- COMMAND`",
                reason="service_not_found",
            )
        if kv is None:
            known = ", ".join(s.name for s in await self.services()) or "none registered"
            raise errors.NotFound(
                f"no add-on service {name!r}; available: {known} (slipway addons:services)",
                reason="service_not_found",
            )
        return ServiceRecord.decode(kv.value)

    # -- add-ons ----------------------------------------------------------------

    async def all_addons(self) -> list[AddonRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.addons())
        return sorted((AddonRecord.decode(kv.value) for kv in kvs), key=lambda a: a.name)

    async def get(self, addon_id: str) -> AddonRecord | None:
        kv = await self.etcd.get(self.keys.addon(addon_id))
        return AddonRecord.decode(kv.value) if kv else None

    async def find(self, ref: str, app: str = "") -> AddonRecord:
        """An add-on by name, uuid, or (with ``app``) the name it is attached as there."""
        ref = ref.strip()
        if not ref:
            raise errors.InvalidArgument("no add-on given: name it (see slipway addons)")
        if app and core.ATTACHMENT_NAME_RE.match(ref):
            attachment = await self.attachment(app, ref)
            if attachment is not None:
                found = await self.get(attachment.addon_id)
                if found is not None:
                    return found
        kv = (
            await self.etcd.get(self.keys.addon_name(ref))
            if core.ADDON_NAME_RE.match(ref)
            else None
        )
        addon_id = kv.value.decode() if kv else ref
        found = await self.get(addon_id) if len(addon_id) == 36 else None
        if found is None:
            where = f" on app {app!r}" if app else ""
            raise errors.NotFound(f"add-on {ref!r} not found{where}", reason="addon_not_found")
        return found

    async def create(
        self,
        app: str,
        service_plan: str,
        *,
        as_name: str = "",
        options: dict[str, str] | None = None,
        actor: str = "",
    ) -> tuple[AddonRecord, AttachmentRecord]:
        """A new add-on in ``provisioning``, attached to ``app`` (its owner)."""
        service_name, plan_name = core.parse_service_plan(service_plan)
        service = await self.service(service_name)
        plan = service.plan(plan_name)
        opts = core.options(options or {})
        await self.state.get_app(app)
        for _ in range(10):
            now = self.clock.now()
            addon = AddonRecord(
                id=core.new_id(),
                name=core.generate_name(service.name),
                service=service.name,
                plan=plan.name,
                app=app,
                state=core.PROVISIONING,
                created_at=now,
                created_by=actor,
                options=opts,
            )
            made = await self._attach_record(addon, service, app, as_name, actor, new=True)
            if made is not None:
                return addon, made
        raise errors.Conflict("could not find a free add-on name; try again")

    async def _attach_record(
        self,
        addon: AddonRecord,
        service: ServiceRecord,
        app: str,
        as_name: str,
        actor: str,
        *,
        new: bool,
    ) -> AttachmentRecord | None:
        """Write the attachment (and, ``new``, the add-on) reserving its vars on the app.
        None: a new add-on's generated name was taken (pick another)."""
        k = self.keys
        if as_name:
            core.attachment_name(as_name)
        taken = [a.name for a in await self.attachments(app)]
        name = as_name or core.default_attachment_name(service, taken)
        key = k.attachment(app, name)
        reserved = sorted(
            core.attached_vars(
                service.config_vars_prefix, {v: "" for v in service.config_vars}, name
            )
        )
        record = AttachmentRecord(
            app=app,
            name=name,
            addon_id=addon.id,
            addon_name=addon.name,
            created_at=self.clock.now(),
            created_by=actor,
            config_vars=reserved,
        )
        guard = [k.app(app), k.config(app), key, k.addon(addon.id), k.addon_name(addon.name)]

        def mutate(cur: dict[bytes, bytes | None]) -> Writes:
            if cur[k.app(app)] is None:
                raise errors.NotFound(f"app {app!r} not found", reason="app_not_found")
            if cur[key] is not None:
                raise errors.AlreadyExists(
                    f"app {app!r} already has an add-on attached as {name}; pass --as OTHER_NAME",
                    reason="attachment_exists",
                )
            if new and cur[k.addon_name(addon.name)] is not None:
                return {}
            if not new and cur[k.addon(addon.id)] is None:
                raise errors.NotFound(f"add-on {addon.name} is gone", reason="addon_not_found")
            app_record = AppRecord.decode(cur[k.app(app)])  # type: ignore[arg-type]
            config = decode_config(cur[k.config(app)])
            clash = [v for v in reserved if v in config or v in app_record.addon_vars]
            if clash:
                raise errors.FailedPrecondition(
                    f"app {app!r} already has {', '.join(clash)}; unset it or attach "
                    "under another name with --as NAME",
                    reason="config_var_taken",
                )
            owned = dict(app_record.addon_vars)
            owned.update({v: name for v in reserved})
            writes: Writes = {
                key: record.encode(),
                k.app(app): replace(app_record, addon_vars=owned).encode(),
            }
            if new:
                writes[k.addon(addon.id)] = addon.encode()
                writes[k.addon_name(addon.name)] = addon.id.encode()
            return writes

        writes = await self.etcd.update(guard, mutate)
        return record if writes else None

    async def update(
        self, addon_id: str, change: Callable[[AddonRecord], AddonRecord | None]
    ) -> AddonRecord | None:
        """Apply ``change`` to the stored add-on (None from it: delete the add-on and its
        name). Returns the add-on as written (None: deleted or not there)."""
        k = self.keys
        out: list[AddonRecord | None] = []

        def mutate(cur: dict[bytes, bytes | None]) -> Writes:
            out.clear()
            raw = cur[k.addon(addon_id)]
            if raw is None:
                out.append(None)
                return {}
            old = AddonRecord.decode(raw)
            fresh = change(old)
            out.append(fresh)
            if fresh is None:
                return {k.addon(addon_id): None, k.addon_name(old.name): None}
            return {k.addon(addon_id): fresh.encode()} if fresh != old else {}

        await self.etcd.update([k.addon(addon_id)], mutate)
        return out[0] if out else None

    # -- attachments ------------------------------------------------------------

    async def attachments(self, app: str | None = None) -> list[AttachmentRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.attachments(app))
        return sorted(
            (AttachmentRecord.decode(kv.value) for kv in kvs), key=lambda a: (a.app, a.name)
        )

    async def attachment(self, app: str, name: str) -> AttachmentRecord | None:
        kv = await self.etcd.get(self.keys.attachment(app, name))
        return AttachmentRecord.decode(kv.value) if kv else None

    async def attach(
        self, addon: AddonRecord, app: str, as_name: str, actor: str
    ) -> tuple[AttachmentRecord, ReleaseRecord | None]:
        """Attach an existing add-on to another app; a release follows at once when the
        add-on is provisioned (else when it is)."""
        if addon.state == core.DEPROVISIONING:
            raise errors.FailedPrecondition(
                f"add-on {addon.name} is being deprovisioned", reason="addon_deprovisioning"
            )
        if any(a.app == app for a in await self.attachments_of(addon.id)):
            raise errors.AlreadyExists(
                f"add-on {addon.name} is already attached to {app!r}", reason="already_attached"
            )
        service = await self.service(addon.service)
        record = await self._attach_record(addon, service, app, as_name, actor, new=False)
        assert record is not None
        release = await self.sync(app, record.name, actor=actor)
        fresh = await self.attachment(app, record.name)
        return fresh or record, release

    async def attachments_of(self, addon_id: str) -> list[AttachmentRecord]:
        return [a for a in await self.attachments() if a.addon_id == addon_id]

    # -- network grants (what agents open their firewalls to) --------------------

    async def publish_grants(self, grants: dict[str, list[core.NetworkGrant]]) -> list[str]:
        """Make ``addongrants/`` say exactly ``grants``; returns the apps whose value changed."""
        wanted = {
            self.keys.addon_grant(app): records.addon_grants_value(
                (g.address, g.port) for g in found
            )
            for app, found in grants.items()
        }
        prefix = self.keys.addon_grants()
        kvs, _ = await self.etcd.get_prefix(prefix)
        have = {kv.key: kv.value for kv in kvs}
        changed = []
        for key, value in sorted(wanted.items()):
            if have.get(key) != value:
                await self.etcd.put(key, value)
                changed.append(key[len(prefix) :].decode())
        for key in sorted(have.keys() - wanted.keys()):
            await self.etcd.delete(key)
            changed.append(key[len(prefix) :].decode())
        return changed

    async def sync(self, app: str, name: str, *, actor: str = "") -> ReleaseRecord | None:
        """Make the app's config hold the add-on's current vars under the attachment
        (a release), when the add-on is provisioned and they differ; None: nothing to do."""
        while True:
            try:
                return await self._try_sync(app, name, actor)
            except _Moved:
                continue

    async def _try_sync(self, app: str, name: str, actor: str) -> ReleaseRecord | None:
        k = self.keys
        akey = k.attachment(app, name)
        att_kv = await self.etcd.get(akey)
        if att_kv is None:
            return None
        attachment = AttachmentRecord.decode(att_kv.value)
        addon_kv = await self.etcd.get(k.addon(attachment.addon_id))
        if addon_kv is None:
            return None
        addon = AddonRecord.decode(addon_kv.value)
        if addon.state != core.PROVISIONED:
            return None
        service = await self.service(addon.service)
        wanted = core.attached_vars(service.config_vars_prefix, addon.config, name)
        digest = core.digest_vars(wanted)
        if digest == attachment.applied_digest and addon.applied_plan == attachment.applied_plan:
            return None
        if not attachment.applied_digest:
            description = f"Attach {name} ({addon.ref})"
        elif digest == attachment.applied_digest:
            description = f"Upgrade {addon.name} to {addon.service}:{addon.applied_plan}"
        else:
            description = f"Update {name} by {addon.name}"
        old_vars = set(attachment.config_vars)
        fresh_attachment = replace(
            attachment,
            config_vars=sorted(wanted),
            applied_digest=digest,
            applied_plan=addon.applied_plan,
        )

        def change(app_record: AppRecord, config: dict[str, str]) -> tuple[dict[str, str], str]:
            new = {k2: v for k2, v in config.items() if k2 not in old_vars}
            new.update(wanted)
            return new, description

        def hook(cur: dict[bytes, bytes | None], release: ReleaseRecord) -> Writes:
            if cur[akey] != att_kv.value or cur[k.addon(addon.id)] != addon_kv.value:
                raise _Moved
            return {akey: fresh_attachment.encode()}

        def owned(app_record: AppRecord) -> AppRecord:
            vars_ = {v: n for v, n in app_record.addon_vars.items() if n != name}
            vars_.update({v: name for v in wanted})
            return replace(app_record, addon_vars=vars_)

        _, release = await self.state.release_config(
            app,
            actor or addon.service,
            change,
            hook_keys=[akey, k.addon(addon.id)],
            hook=hook,
            app_update=owned,
        )
        return release

    async def detach(self, app: str, name: str, *, actor: str = "") -> ReleaseRecord | None:
        """Remove the attachment and its vars (a release when it had put any in the
        config; None when the app is gone or it never had)."""
        while True:
            try:
                return await self._try_detach(app, name, actor)
            except _Moved:
                continue

    async def _try_detach(self, app: str, name: str, actor: str) -> ReleaseRecord | None:
        k = self.keys
        akey = k.attachment(app, name)
        att_kv = await self.etcd.get(akey)
        if att_kv is None:
            raise errors.NotFound(
                f"app {app!r} has no add-on attached as {name}", reason="attachment_not_found"
            )
        attachment = AttachmentRecord.decode(att_kv.value)
        app_kv = await self.etcd.get(k.app(app))
        if app_kv is None:
            await self.etcd.delete(akey)
            return None
        old_vars = set(attachment.config_vars)
        description = f"Detach {name} ({'@ref:' + attachment.addon_name})"

        def change(app_record: AppRecord, config: dict[str, str]) -> tuple[dict[str, str], str]:
            return {k2: v for k2, v in config.items() if k2 not in old_vars}, description

        def hook(cur: dict[bytes, bytes | None], release: ReleaseRecord) -> Writes:
            if cur[akey] != att_kv.value:
                raise _Moved
            return {akey: None}

        def owned(app_record: AppRecord) -> AppRecord:
            vars_ = {v: n for v, n in app_record.addon_vars.items() if n != name}
            return replace(app_record, addon_vars=vars_)

        _, release = await self.state.release_config(
            app, actor or "add-ons", change, hook_keys=[akey], hook=hook, app_update=owned
        )
        return release
