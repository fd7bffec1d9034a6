"""Desired state in etcd: apps, config vars, releases, formations.

Every change is one etcd transaction guarded by the revisions of the keys it
read (:meth:`slipway.etcd.Etcd.update`), so concurrent writers never lose an
update and release versions stay contiguous. The routing record of an app
(``routes/apps/{app}``) is rewritten in the same transaction as the change
that affects it, so routers never see a half-applied change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controller.core import naming, validation
from controller.core.models import (
    RELEASE_FAILED,
    RELEASE_PENDING,
    RELEASE_SUCCEEDED,
    AppRecord,
    FormationItem,
    ReleaseRecord,
    SlugInfo,
    decode_config,
    decode_formation,
    encode_config,
    encode_formation,
    initial_status,
)
from controller.core.sizes import DEFAULT_SIZE, SizeTable
from slipway import errors
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys

# Given the app and its current config, returns the new config and the release description.
ConfigChange = Callable[[AppRecord, dict[str, str]], tuple[dict[str, str], str]]
# Extra writes committed in the same transaction as a new release, from the current
# values of the hook's own keys (read and guarded with the rest); raising aborts. Builds
# use it to record "this build made vN" atomically, so a build releases exactly once.
ReleaseHook = Callable[[dict[bytes, bytes | None], ReleaseRecord], Mapping[bytes, bytes | None]]


class _StaleRead(Exception):
    """The app moved on between two reads; start the change again."""


@dataclass(frozen=True)
class ScaleChange:
    type: str
    quantity: int | None = None
    delta: int | None = None
    size: str = ""


def describe_config_change(set_keys: list[str], unset_keys: list[str]) -> str:
    parts = []
    if set_keys:
        parts.append(f"Set {', '.join(set_keys)} config vars")
    if unset_keys:
        parts.append(f"Unset {', '.join(unset_keys)} config vars")
    return " and ".join(parts) if parts else "Config unchanged"


def route_record(
    app: AppRecord, formation: dict[str, FormationItem], *, crashed: bool, released: bool
) -> bytes:
    """What routers need of an app; ``released`` means the current release has a slug."""
    web = formation.get("web")
    return json.dumps(
        {
            "app": app.name,
            "web": web.quantity if web else 0,
            "released": released,
            "maintenance": app.maintenance,
            "crashed": crashed,
            "balance": app.balance,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def _crashed(route_value: bytes | None) -> bool:
    return bool(route_value and json.loads(route_value).get("crashed"))


def _released(route_value: bytes | None) -> bool:
    return bool(route_value and json.loads(route_value).get("released"))


def merge_formation(
    formation: dict[str, FormationItem], process_types: Mapping[str, str]
) -> dict[str, FormationItem]:
    """Give every process type of a release an entry: web starts at 1, others at 0."""
    merged = dict(formation)
    for ptype in process_types:
        if ptype == "release" or ptype in merged:
            continue
        merged[ptype] = FormationItem(1 if ptype == "web" else 0, DEFAULT_SIZE)
    return merged


class State:
    def __init__(
        self, etcd: Etcd, keys: Keys, sizes: SizeTable, *, clock: Clock = SystemClock()
    ) -> None:
        self.clock = clock
        self.etcd = etcd
        self.keys = keys
        self.sizes = sizes

    # -- apps ---------------------------------------------------------------

    async def create_app(self, name: str | None) -> AppRecord:
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
            )
            if await self._create_app_record(record):
                return record
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
        ok, _ = await self.etcd._call(
            self.etcd.raw.transaction(
                compare=[self.etcd.tx.version(k.app(record.name)) == 0],
                success=[
                    self.etcd.tx.put(k.app(record.name), record.encode()),
                    self.etcd.tx.put(k.release(record.name, 1), initial.encode()),
                    self.etcd.tx.put(k.config(record.name), encode_config({})),
                    self.etcd.tx.put(k.formation(record.name), encode_formation({})),
                    self.etcd.tx.put(
                        k.route_app(record.name),
                        route_record(record, {}, crashed=False, released=False),
                    ),
                ],
                failure=[],
            )
        )
        return bool(ok)

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
        ]
        # Placements go with the app; agents then stop the dynos and drop their
        # own statuses and routes (tied to their leases).
        prefixes = [k.releases(name), k.dynos(name)]
        ok, _ = await self.etcd._call(
            self.etcd.raw.transaction(
                compare=[tx.version(k.app(name)) > 0],
                success=[tx.delete(key) for key in whole_keys]
                + [tx.delete(p, range_end=_prefix_end(p)) for p in prefixes],
                failure=[],
            )
        )
        if not ok:
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
        description = describe_config_change(sorted(set_vars), sorted(unset))

        def change(app: AppRecord, config: dict[str, str]) -> tuple[dict[str, str], str]:
            new = dict(config)
            new.update(set_vars)
            for key in unset:
                new.pop(key, None)
            return validation.config_vars(new), description

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
            return dict(target.config), f"Rollback to v{version}"

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
        result: list[tuple[ReleaseRecord | None, bool]] = []

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            app_raw, rel_raw = cur[k.app(name)], cur[k.release(name, version)]
            if app_raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            app = AppRecord.decode(app_raw)
            release = ReleaseRecord.decode(rel_raw) if rel_raw is not None else None
            tracked = version in app.pending_releases
            app.pending_releases = [v for v in app.pending_releases if v != version]
            writes: dict[bytes, bytes | None] = {k.app(name): app.encode()} if tracked else {}
            result.append((release, False))
            if release is None or release.status != RELEASE_PENDING:
                return writes
            release.status, release.error = status, error
            writes[k.release(name, version)] = release.encode()
            if release.phase_instance:
                writes[k.dyno(name, release.phase_instance)] = None
            live = status == RELEASE_SUCCEEDED and version > app.current_release
            if live:
                app.current_release = version
                writes.update(self._live_writes(app, release, cur))
            writes[k.app(name)] = app.encode()
            result[-1] = (release, live)
            return writes

        await self.etcd.update(
            [k.app(name), k.release(name, version), k.formation(name), k.route_app(name)], mutate
        )
        return result[-1]

    def _live_writes(
        self, app: AppRecord, release: ReleaseRecord, cur: dict[bytes, bytes | None]
    ) -> dict[bytes, bytes | None]:
        """The formation and routing record once ``release`` is the app's current one."""
        k = self.keys
        formation = merge_formation(
            decode_formation(cur[k.formation(app.name)]), release.process_types
        )
        return {
            k.formation(app.name): encode_formation(formation),
            k.route_app(app.name): route_record(
                app,
                formation,
                crashed=_crashed(cur[k.route_app(app.name)]),
                released=bool(release.slug.digest),
            ),
        }

    async def adopt_release_phase(
        self, name: str, version: int, command: str, instance: str, started_at: float
    ) -> None:
        """Track a pending release made before releases carried their own phase (its
        build record held it): give it the command and dyno, and list it as pending."""
        k = self.keys

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            app_raw, rel_raw = cur[k.app(name)], cur[k.release(name, version)]
            if app_raw is None or rel_raw is None:
                return {}
            app = AppRecord.decode(app_raw)
            release = ReleaseRecord.decode(rel_raw)
            if release.status != RELEASE_PENDING or version in app.pending_releases:
                return {}
            release.release_command = release.release_command or command
            if not release.phase_instance:
                release.phase_instance, release.phase_started_at = instance, started_at
            app.pending_releases.append(version)
            return {k.app(name): app.encode(), k.release(name, version): release.encode()}

        await self.etcd.update([k.app(name), k.release(name, version)], mutate)

    async def _new_release(
        self,
        name: str,
        actor: str,
        change: ConfigChange,
        *,
        copy_from: ReleaseRecord | None,
        hook_keys: Sequence[bytes] = (),
        hook: ReleaseHook | None = None,
    ) -> tuple[dict[str, str], ReleaseRecord]:
        """Allocate the next version and write config + release + app in one transaction.

        The slug, process types and release command come from ``copy_from``, else
        from the current release. With a release command the new release is
        ``pending``: listed in the app's ``pending_releases`` for the release phase
        (controller/loops/release_phase.py), not live yet; otherwise it is live at once.
        """
        self._checked_name(name)
        while True:
            result = await self._try_new_release(name, actor, change, copy_from, hook_keys, hook)
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
    ) -> tuple[dict[str, str], ReleaseRecord] | None:
        """One attempt; None when the app's current release moved meanwhile."""
        k = self.keys
        out: list[tuple[dict[str, str], ReleaseRecord]] = []
        app = await self.get_app(name)
        current_key = k.release(name, app.current_release) if app.current_release else None
        keys = [k.app(name), k.config(name), k.formation(name), k.route_app(name)]
        if current_key:
            keys.append(current_key)
        keys.extend(k for k in hook_keys if k not in keys)

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            raw = cur[k.app(name)]
            if raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            fresh = AppRecord.decode(raw)
            if fresh.current_release != app.current_release:
                raise _StaleRead
            config, description = change(fresh, decode_config(cur[k.config(name)]))
            base = copy_from
            if base is None and current_key and cur.get(current_key):
                base = ReleaseRecord.decode(cur[current_key])  # type: ignore[arg-type]
            version = fresh.release_seq + 1
            command = base.release_command if base else ""
            release = ReleaseRecord(
                app=name,
                version=version,
                description=description,
                created_at=self.clock.now(),
                config=dict(config),
                slug=base.slug if base else SlugInfo(),
                process_types=dict(base.process_types) if base else {},
                status=initial_status(command),
                created_by=actor,
                build_id=base.build_id if base else "",
                release_command=command,
            )
            fresh.release_seq = version
            writes: dict[bytes, bytes | None] = {
                k.release(name, version): release.encode(),
                k.config(name): encode_config(config),
            }
            if release.status == RELEASE_PENDING:
                fresh.pending_releases.append(version)
            else:
                fresh.current_release = version
                writes.update(self._live_writes(fresh, release, cur))
            writes[k.app(name)] = fresh.encode()
            if hook is not None:
                writes.update(hook(cur, release))
            out.append((dict(config), release))
            return writes

        try:
            await self.etcd.update(keys, mutate)
        except _StaleRead:
            return None
        return out[-1]

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
        if not changes:
            raise errors.InvalidArgument("nothing to scale: give TYPE=N, TYPE+N or TYPE=N:SIZE")
        seen: set[str] = set()
        for ch in changes:
            validation.process_type(ch.type)
            if ch.type in seen:
                raise errors.InvalidArgument(f"process type {ch.type!r} given twice")
            seen.add(ch.type)
            if ch.size:
                self.sizes.get(ch.size)
        while True:
            result = await self._try_scale(name, changes, seen)
            if result is not None:
                return result

    async def _try_scale(
        self, name: str, changes: list[ScaleChange], seen: set[str]
    ) -> dict[str, FormationItem] | None:
        """One attempt; None when the app's current release moved meanwhile."""
        k = self.keys
        app = await self.get_app(name)
        process_types: dict[str, str] = {}
        if app.current_release:
            process_types = (await self.get_release(name, app.current_release)).process_types
        defined = sorted(t for t in process_types if t != "release")
        if defined:
            unknown = [ch.type for ch in changes if ch.type not in process_types]
            if unknown:
                raise errors.InvalidArgument(
                    f"no process type {', '.join(unknown)} in release v{app.current_release}; "
                    f"it defines: {', '.join(defined)}",
                    reason="unknown_process_type",
                )
        if "release" in seen:
            raise errors.InvalidArgument(
                "the release process type runs once per release; it cannot be scaled"
            )
        result: list[dict[str, FormationItem]] = []

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            raw = cur[k.app(name)]
            if raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            fresh = AppRecord.decode(raw)
            if fresh.current_release != app.current_release:
                raise _StaleRead
            formation = decode_formation(cur[k.formation(name)])
            for ch in changes:
                item = formation.get(ch.type, FormationItem(0, DEFAULT_SIZE))
                if ch.quantity is not None:
                    qty = ch.quantity
                else:
                    qty = item.quantity + (ch.delta or 0)
                validation.quantity(ch.type, qty)
                formation[ch.type] = FormationItem(
                    qty, self.sizes.get(ch.size).name if ch.size else item.size
                )
            result.append(formation)
            return {
                k.formation(name): encode_formation(formation),
                k.route_app(name): route_record(
                    fresh,
                    formation,
                    crashed=_crashed(cur[k.route_app(name)]),
                    released=_released(cur[k.route_app(name)]),
                ),
            }

        try:
            await self.etcd.update([k.app(name), k.formation(name), k.route_app(name)], mutate)
        except _StaleRead:
            return None
        return result[-1]


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])
