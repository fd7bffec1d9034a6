"""Desired state in etcd: apps, config vars, releases, formations.

Every change is one etcd transaction guarded by the revisions of the keys it
read (:meth:`slipway.etcd.Etcd.update`), so concurrent writers never lose an
update and release versions stay contiguous. The routing record of an app
(``routes/apps/{app}``) is rewritten in the same transaction as the change
that affects it, so routers never see a half-applied change.

Only I/O lives here: what a change does to the records (a new release, a
settled release phase, a scale) is a pure function in
``controller/core/transitions.py``; this module reads, applies it, commits and
retries when it lost a race.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from controller.core import naming, transitions, validation
from controller.core.models import (
    RELEASE_FAILED,
    AppRecord,
    FormationItem,
    ReleaseRecord,
    SlugInfo,
    decode_config,
    decode_formation,
    encode_config,
    encode_formation,
)
from controller.core.sizes import SizeTable
from controller.core.transitions import ScaleChange, route_flags, route_record
from slipway import certs, errors
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys

# Given the app and its current config, returns the new config and the release description.
ConfigChange = Callable[[AppRecord, dict[str, str]], tuple[dict[str, str], str]]
# Extra writes committed in the same transaction as a new release, from the current
# values of the hook's own keys (read and guarded with the rest); raising aborts. Builds
# use it to record "this build made vN" atomically, so a build releases exactly once.
ReleaseHook = Callable[[dict[bytes, bytes | None], ReleaseRecord], Mapping[bytes, bytes | None]]
# Changes the app record written with a new release (attachments record the config vars
# they own in it, so config:set sees them in the same transaction).
AppUpdate = Callable[[AppRecord], AppRecord]


Writes = dict[bytes, bytes | None]
T = TypeVar("T")

__all__ = ["AppUpdate", "ConfigChange", "ReleaseHook", "ScaleChange", "StaleRead", "State"]


class StaleRead(Exception):
    """The app moved on between two reads; start the change again."""


class State:
    def __init__(
        self, etcd: Etcd, keys: Keys, sizes: SizeTable, *, clock: Clock = SystemClock()
    ) -> None:
        self.clock = clock
        self.etcd = etcd
        self.keys = keys
        self.sizes = sizes

    async def _change(
        self, keys: Sequence[bytes], step: Callable[[dict[bytes, bytes | None]], tuple[Writes, T]]
    ) -> T:
        """Read ``keys``, let ``step`` decide the writes and a result, commit them guarded
        by the revisions read (repeated on a lost race); returns the committed step's result."""
        results: list[T] = []

        def mutate(cur: dict[bytes, bytes | None]) -> Writes:
            writes, result = step(cur)
            results.append(result)
            return writes

        await self.etcd.update(keys, mutate)
        return results[-1]

    def _formation_writes(
        self,
        app: AppRecord,
        formation: dict[str, FormationItem],
        cur: dict[bytes, bytes | None],
        *,
        released: bool | None = None,
    ) -> Writes:
        """The formation and the routing record that follows it (``released``: whether
        the current release has a slug; None keeps what the record says)."""
        k = self.keys
        crashed, was_released = route_flags(cur[k.route_app(app.name)])
        return {
            k.formation(app.name): encode_formation(formation),
            k.route_app(app.name): route_record(
                app,
                formation,
                crashed=crashed,
                released=was_released if released is None else released,
            ),
        }

    # -- apps ---------------------------------------------------------------

    async def create_app(self, name: str | None, owner: str = "", team: str = "") -> AppRecord:
        """A new app owned by ``owner`` (an account) or, with ``team``, by that team;
        the team must exist when the app is made (checked in the same transaction)."""
        if name:
            validation.app_name(name)
            candidates = [name]
        else:
            candidates = [naming.generate() for _ in range(10)]
        for candidate in candidates:
            now = self.clock.now()
            record = AppRecord(
                name=candidate,
                id=str(uuid.uuid4()),
                created_at=now,
                release_seq=1,
                current_release=1,
                owner="" if team else owner,
                team=team,
            )
            if await self._create_app_record(record):
                return record
            if team and await self.etcd.get(self.keys.team(team)) is None:
                raise errors.NotFound(f"team {team!r} not found", reason="team_not_found")
            if name:
                raise errors.AlreadyExists(
                    f"app {name!r} already exists; choose another name", reason="app_exists"
                )
        raise errors.Conflict("could not find a free app name; try again")

    async def _create_app_record(self, record: AppRecord) -> bool:
        k = self.keys
        # Like Heroku, a new app starts at v1 "Initial release": no slug, no config.
        initial = ReleaseRecord(
            app=record.name,
            version=1,
            description="Initial release",
            created_at=record.created_at,
            config={},
            slug=SlugInfo(),
            process_types={},
        )
        tx = self.etcd.tx
        compare = [tx.version(k.app(record.name)) == 0]
        if record.team:
            compare.append(tx.version(k.team(record.team)) > 0)
        return await self.etcd.txn(
            compare=compare,
            success=[
                tx.put(k.app(record.name), record.encode()),
                tx.put(k.release(record.name, 1), initial.encode()),
                tx.put(k.config(record.name), encode_config({})),
                tx.put(k.formation(record.name), encode_formation({})),
                tx.put(
                    k.route_app(record.name),
                    route_record(record, {}, crashed=False, released=False),
                ),
            ],
        )

    async def list_apps(self) -> list[AppRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.apps())
        return sorted((AppRecord.decode(kv.value) for kv in kvs), key=lambda a: a.name)

    async def get_app(self, name: str) -> AppRecord:
        kv = await self.etcd.get(self.keys.app(self._checked_name(name)))
        if kv is None:
            raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
        return AppRecord.decode(kv.value)

    @staticmethod
    def _checked_name(name: str) -> str:
        if not name:
            raise errors.InvalidArgument("no app given; pass -a APP", reason="missing_app")
        return validation.app_name(name)

    async def destroy_app(self, name: str, confirm: str) -> None:
        await self.get_app(name)
        if confirm != name:
            raise errors.FailedPrecondition(
                f"destroying {name!r} needs confirmation: pass --confirm {name}",
                reason="confirmation_required",
            )
        k = self.keys
        tx = self.etcd.tx
        whole_keys = [
            k.app(name),
            k.config(name),
            k.formation(name),
            k.route_app(name),
            k.run_seq(name),
            k.scheduler_seq(name),
            k.audit_seq(name),
        ]
        # Placements go with the app; agents then stop the dynos and drop their
        # own statuses and routes (tied to their leases).
        prefixes = [
            k.releases(name),
            k.dynos(name),
            k.log_drains(name),
            k.scheduler_jobs(name),
            k.collaborators(name),
            k.audit_records(name),
            # What the app only uses is detached with it; the add-ons it owns are
            # deprovisioned by the leader once it sees their app gone.
            k.attachments(name),
        ]
        # Its custom domains are released, with the certificates served for them.
        seq = await self.etcd.get(k.edge_seq(name))
        domains, _ = await self.etcd.get_prefix(k.domains(name))
        for kv in domains:
            host = kv.key[len(k.domains(name)) :].decode()
            whole_keys.append(k.route_domain(host))
            served = await self.etcd.get(k.route_cert(host))
            if served is not None and certs.served_upload(served.value)[0]:
                whole_keys.append(k.route_cert(host))
        whole_keys += [k.edge_seq(name), k.acme_app(name)]
        prefixes += [k.domains(name), k.app_certs(name), k.acme_statuses(name)]
        ok = await self.etcd.txn(
            compare=[
                tx.version(k.app(name)) > 0,
                tx.mod(k.edge_seq(name)) == (seq.mod_revision if seq else 0),
            ],
            success=[tx.delete(key) for key in whole_keys]
            + [tx.delete(p, range_end=_prefix_end(p)) for p in prefixes],
        )
        if not ok:
            if await self.etcd.get(k.app(name)) is not None:
                raise errors.Conflict(
                    f"{name}'s domains changed while it was being destroyed; try again",
                    reason="write_conflict",
                )
            raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")

    # -- config -------------------------------------------------------------

    async def get_config(self, name: str) -> dict[str, str]:
        await self.get_app(name)
        kv = await self.etcd.get(self.keys.config(name))
        return decode_config(kv.value if kv else None)

    async def update_config(
        self, name: str, set_vars: Mapping[str, str], unset: list[str], actor: str
    ) -> tuple[dict[str, str], ReleaseRecord]:
        for key in [*set_vars, *unset]:
            validation.config_key(key)
        if not set_vars and not unset:
            raise errors.InvalidArgument("nothing to change: give KEY=VALUE or keys to unset")
        overlap = set(set_vars) & set(unset)
        if overlap:
            raise errors.InvalidArgument(
                f"cannot set and unset {', '.join(sorted(overlap))} in one change"
            )
        description = transitions.describe_config_change(sorted(set_vars), sorted(unset))

        def change(app: AppRecord, config: dict[str, str]) -> tuple[dict[str, str], str]:
            owned = sorted(k for k in [*set_vars, *unset] if k in app.addon_vars)
            if owned:
                var = owned[0]
                raise errors.FailedPrecondition(
                    f"{', '.join(owned)} {'is' if len(owned) == 1 else 'are'} set by the "
                    f"add-on attached as {app.addon_vars[var]}; it changes with the add-on "
                    f"(slipway addons:info {app.addon_vars[var]} -a {app.name})",
                    reason="addon_config_var",
                )
            return transitions.changed_config(config, set_vars, unset), description

        return await self._new_release(name, actor, change, copy_from=None)

    # -- releases -----------------------------------------------------------

    async def list_releases(self, name: str, limit: int = 0) -> list[ReleaseRecord]:
        await self.get_app(name)
        kvs, _ = await self.etcd.get_prefix(self.keys.releases(name))
        releases = sorted((ReleaseRecord.decode(kv.value) for kv in kvs), key=lambda r: -r.version)
        return releases[:limit] if limit > 0 else releases

    async def get_release(self, name: str, version: int = 0) -> ReleaseRecord:
        app = await self.get_app(name)
        if version <= 0:
            version = app.current_release
            if version == 0:
                raise errors.NotFound(f"app {name!r} has no releases yet", reason="no_release")
        kv = await self.etcd.get(self.keys.release(name, version))
        if kv is None:
            raise errors.NotFound(
                f"release v{version} of {name!r} not found; latest is v{app.release_seq}",
                reason="release_not_found",
            )
        return ReleaseRecord.decode(kv.value)

    async def rollback(self, name: str, version: int, actor: str) -> ReleaseRecord:
        app = await self.get_app(name)
        if version <= 0:
            version = app.current_release - 1
            if version <= 0:
                raise errors.FailedPrecondition(
                    f"app {name!r} has no earlier release to roll back to"
                )
        target = await self.get_release(name, version)
        if target.status == RELEASE_FAILED:
            raise errors.FailedPrecondition(
                f"v{version} failed its release phase; pick another release"
            )

        def change(app: AppRecord, config: dict[str, str]) -> tuple[dict[str, str], str]:
            # Add-ons are not rolled back: their vars keep today's values.
            restored = {k: v for k, v in target.config.items() if k not in app.addon_vars}
            restored.update({k: config[k] for k in app.addon_vars if k in config})
            return restored, f"Rollback to v{version}"

        _, release = await self._new_release(name, actor, change, copy_from=target)
        return release

    async def create_release(
        self,
        name: str,
        slug: SlugInfo,
        process_types: Mapping[str, str],
        description: str,
        actor: str,
        *,
        build_id: str = "",
        release_command: str = "",
        hook_keys: Sequence[bytes] = (),
        hook: ReleaseHook | None = None,
    ) -> ReleaseRecord:
        """A release of a new slug; ``pending`` (not live) when it has a release command."""
        for ptype in process_types:
            validation.process_type(ptype)
        if not slug.digest:
            raise errors.InvalidArgument("a release needs a slug digest")
        desc = description or f"Deploy {(slug.source_version or slug.digest)[:7]}"
        template = ReleaseRecord(
            app=name,
            version=0,
            description=desc,
            created_at=0,
            config={},
            slug=slug,
            process_types=dict(process_types),
            build_id=build_id,
            release_command=release_command,
        )

        def change(app: AppRecord, config: dict[str, str]) -> tuple[dict[str, str], str]:
            return config, desc

        _, release = await self._new_release(
            name, actor, change, copy_from=template, hook_keys=hook_keys, hook=hook
        )
        return release

    async def release_config(
        self,
        name: str,
        actor: str,
        change: ConfigChange,
        *,
        hook_keys: Sequence[bytes] = (),
        hook: ReleaseHook | None = None,
        app_update: AppUpdate | None = None,
    ) -> tuple[dict[str, str], ReleaseRecord]:
        """A new release of the current slug with the config ``change`` returns (add-ons
        use it: their keys guarded with the release, the app's owned vars updated)."""
        return await self._new_release(
            name,
            actor,
            change,
            copy_from=None,
            hook_keys=hook_keys,
            hook=hook,
            app_update=app_update,
        )

    async def set_release_status(
        self, name: str, version: int, status: str, *, error: str = ""
    ) -> tuple[ReleaseRecord | None, bool]:
        """Settle a pending release's phase, in one transaction with its bookkeeping.

        On success the release goes live, unless a newer one already is (an older
        pending release finishing late never replaces it); on failure it is left
        aside with ``error``. Either way it leaves the app's ``pending_releases`` and
        its ``release.N`` placement is removed. A release already settled is left as
        it is. Returns the release (None when it is gone) and whether it went live.
        """
        k = self.keys

        def step(
            cur: dict[bytes, bytes | None],
        ) -> tuple[Writes, tuple[ReleaseRecord | None, bool]]:
            app_raw, rel_raw = cur[k.app(name)], cur[k.release(name, version)]
            if app_raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            settled = transitions.settle_release(
                AppRecord.decode(app_raw),
                version,
                ReleaseRecord.decode(rel_raw) if rel_raw is not None else None,
                decode_formation(cur[k.formation(name)]),
                status,
                error,
            )
            writes: Writes = {}
            if settled.release is not None and settled.release_changed:
                writes[k.release(name, version)] = settled.release.encode()
            if settled.remove_dyno:
                writes[k.dyno(name, settled.remove_dyno)] = None
            if settled.app is not None:
                if settled.formation is not None and settled.release is not None:
                    writes.update(
                        self._formation_writes(
                            settled.app,
                            settled.formation,
                            cur,
                            released=bool(settled.release.slug.digest),
                        )
                    )
                writes[k.app(name)] = settled.app.encode()
            return writes, (settled.release, settled.live)

        return await self._change(
            [k.app(name), k.release(name, version), k.formation(name), k.route_app(name)], step
        )

    async def _new_release(
        self,
        name: str,
        actor: str,
        change: ConfigChange,
        *,
        copy_from: ReleaseRecord | None,
        hook_keys: Sequence[bytes] = (),
        hook: ReleaseHook | None = None,
        app_update: AppUpdate | None = None,
    ) -> tuple[dict[str, str], ReleaseRecord]:
        """Allocate the next version and write config + release + app in one transaction.

        The slug, process types and release command come from ``copy_from``, else
        from the current release. With a release command the new release is
        ``pending``: listed in the app's ``pending_releases`` for the release phase
        (controller/loops/release_phase.py), not live yet; otherwise it is live at once.
        """
        self._checked_name(name)
        while True:
            result = await self._try_new_release(
                name, actor, change, copy_from, hook_keys, hook, app_update
            )
            if result is not None:
                return result

    async def _try_new_release(
        self,
        name: str,
        actor: str,
        change: ConfigChange,
        copy_from: ReleaseRecord | None,
        hook_keys: Sequence[bytes] = (),
        hook: ReleaseHook | None = None,
        app_update: AppUpdate | None = None,
    ) -> tuple[dict[str, str], ReleaseRecord] | None:
        """One attempt; None when the app's current release moved meanwhile."""
        k = self.keys
        app = await self.get_app(name)
        current_key = k.release(name, app.current_release) if app.current_release else None
        keys = [k.app(name), k.config(name), k.formation(name), k.route_app(name)]
        if current_key:
            keys.append(current_key)
        keys.extend(k for k in hook_keys if k not in keys)

        def step(
            cur: dict[bytes, bytes | None],
        ) -> tuple[Writes, tuple[dict[str, str], ReleaseRecord]]:
            raw = cur[k.app(name)]
            if raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            fresh = AppRecord.decode(raw)
            if fresh.current_release != app.current_release:
                raise StaleRead
            config, description = change(fresh, decode_config(cur[k.config(name)]))
            base = copy_from
            if base is None and current_key and cur.get(current_key):
                base = ReleaseRecord.decode(cur[current_key])  # type: ignore[arg-type]
            new = transitions.new_release(
                fresh,
                config,
                decode_formation(cur[k.formation(name)]),
                base,
                description=description,
                actor=actor,
                now=self.clock.now(),
            )
            if app_update is not None:
                new.app = app_update(new.app)
            release = new.release
            writes: Writes = {
                k.release(name, release.version): release.encode(),
                k.config(name): encode_config(new.config),
            }
            if new.formation is not None:
                writes.update(
                    self._formation_writes(
                        new.app, new.formation, cur, released=bool(release.slug.digest)
                    )
                )
            writes[k.app(name)] = new.app.encode()
            if hook is not None:
                writes.update(hook(cur, release))
            return writes, (new.config, release)

        try:
            return await self._change(keys, step)
        except StaleRead:
            return None

    # -- formation ----------------------------------------------------------

    async def get_formation(self, name: str) -> tuple[dict[str, FormationItem], dict[str, str]]:
        """The formation and the current release's process types (command per type)."""
        app = await self.get_app(name)
        kv = await self.etcd.get(self.keys.formation(name))
        formation = decode_formation(kv.value if kv else None)
        process_types: dict[str, str] = {}
        if app.current_release:
            process_types = (await self.get_release(name, app.current_release)).process_types
        return formation, process_types

    async def scale(self, name: str, changes: list[ScaleChange]) -> dict[str, FormationItem]:
        transitions.check_scale_request(changes, self.sizes)
        while True:
            result = await self._try_scale(name, changes)
            if result is not None:
                return result

    async def _try_scale(
        self, name: str, changes: list[ScaleChange]
    ) -> dict[str, FormationItem] | None:
        """One attempt; None when the app's current release moved meanwhile."""
        k = self.keys
        app = await self.get_app(name)
        process_types: dict[str, str] = {}
        if app.current_release:
            process_types = (await self.get_release(name, app.current_release)).process_types
        transitions.check_scale(changes, process_types, app.current_release)

        def step(cur: dict[bytes, bytes | None]) -> tuple[Writes, dict[str, FormationItem]]:
            raw = cur[k.app(name)]
            if raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            fresh = AppRecord.decode(raw)
            if fresh.current_release != app.current_release:
                raise StaleRead
            formation = transitions.scale(
                decode_formation(cur[k.formation(name)]), changes, self.sizes
            )
            return self._formation_writes(fresh, formation, cur), formation

        try:
            return await self._change([k.app(name), k.formation(name), k.route_app(name)], step)
        except StaleRead:
            return None


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])
