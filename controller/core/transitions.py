"""Pure transitions of an app's desired state: new releases, settling a release phase, scaling.

Each function takes the records as read and returns the records to write (or
raises :class:`slipway.errors.SlipwayError` to refuse the change). No I/O and
no clock reads: ``controller/store/state.py`` reads the records, calls one of
these, writes the result in one etcd transaction guarded by the revisions it
read, and retries when it lost a race. Tested by tables in
``tests/unit/test_transitions.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from controller.core import validation
from controller.core.models import (
    RELEASE_PENDING,
    RELEASE_SUCCEEDED,
    AppRecord,
    FormationItem,
    ReleaseRecord,
    SlugInfo,
    initial_status,
)
from controller.core.sizes import DEFAULT_SIZE, SizeTable
from slipway import errors


@dataclass(frozen=True)
class ScaleChange:
    type: str
    quantity: int | None = None
    delta: int | None = None
    size: str = ""


@dataclass
class Released:
    """A new release and what it changes: the app (version counter, current or
    pending release), the config, and the formation when the release is live."""

    app: AppRecord
    release: ReleaseRecord
    config: dict[str, str]
    formation: dict[str, FormationItem] | None  # None: a pending release changes none


@dataclass
class Settled:
    """A release phase's verdict applied: the records to write (None: unchanged)."""

    release: ReleaseRecord | None  # as it is now (None: gone)
    live: bool = False  # it became the app's current release
    app: AppRecord | None = None
    release_changed: bool = False
    remove_dyno: str = ""  # the release.N placement to delete (instance id)
    formation: dict[str, FormationItem] | None = None


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


def route_flags(route_value: bytes | None) -> tuple[bool, bool]:
    """``(crashed, released)`` of a stored routing record (both False when absent)."""
    record = json.loads(route_value) if route_value else {}
    return bool(record.get("crashed")), bool(record.get("released"))


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


def changed_config(
    config: Mapping[str, str], set_vars: Mapping[str, str], unset: list[str]
) -> dict[str, str]:
    """``config`` with ``set_vars`` set and ``unset`` removed, checked against the limits."""
    new = dict(config)
    new.update(set_vars)
    for key in unset:
        new.pop(key, None)
    return validation.config_vars(new)


def new_release(
    app: AppRecord,
    config: Mapping[str, str],
    formation: dict[str, FormationItem],
    base: ReleaseRecord | None,
    *,
    description: str,
    actor: str,
    now: float,
) -> Released:
    """The app's next release with ``config``.

    The slug, process types, build and release command come from ``base`` (the
    release rolled back to, a deploy's template, or else the current release).
    With a release command the release is ``pending``: listed in the app's
    ``pending_releases`` for the release phase, not live yet; otherwise it is
    the current release at once and the formation gains its process types.
    """
    version = app.release_seq + 1
    command = base.release_command if base else ""
    release = ReleaseRecord(
        app=app.name,
        version=version,
        description=description,
        created_at=now,
        config=dict(config),
        slug=base.slug if base else SlugInfo(),
        process_types=dict(base.process_types) if base else {},
        status=initial_status(command),
        created_by=actor,
        build_id=base.build_id if base else "",
        release_command=command,
    )
    fresh = replace(app, release_seq=version, pending_releases=list(app.pending_releases))
    if release.status == RELEASE_PENDING:
        fresh.pending_releases.append(version)
        return Released(fresh, release, dict(config), None)
    fresh.current_release = version
    return Released(fresh, release, dict(config), merge_formation(formation, release.process_types))


def settle_release(
    app: AppRecord,
    version: int,
    release: ReleaseRecord | None,
    formation: dict[str, FormationItem],
    status: str,
    error: str = "",
) -> Settled:
    """A pending release's phase ends with ``status`` (succeeded or failed).

    On success the release goes live, unless a newer one already is (an older
    pending release finishing late never replaces it); on failure it is left
    aside with ``error``. Either way it leaves the app's ``pending_releases``
    and its ``release.N`` placement goes. A release already settled stays as
    it is (the first verdict stands); a release that is gone (None) only
    leaves the pending list.
    """
    tracked = version in app.pending_releases
    fresh = replace(app, pending_releases=[v for v in app.pending_releases if v != version])
    if release is None or release.status != RELEASE_PENDING:
        return Settled(release, app=fresh if tracked else None)
    settled = replace(release, status=status, error=error)
    live = status == RELEASE_SUCCEEDED and version > app.current_release
    if live:
        fresh.current_release = version
    return Settled(
        settled,
        live=live,
        app=fresh,
        release_changed=True,
        remove_dyno=release.phase_instance,
        formation=merge_formation(formation, settled.process_types) if live else None,
    )


def check_scale_request(changes: list[ScaleChange], sizes: SizeTable) -> None:
    """Refuse a scale request that is wrong whatever the app: no change, a bad or
    repeated type name, an unknown size."""
    if not changes:
        raise errors.InvalidArgument("nothing to scale: give TYPE=N, TYPE+N or TYPE=N:SIZE")
    seen: set[str] = set()
    for ch in changes:
        validation.process_type(ch.type)
        if ch.type in seen:
            raise errors.InvalidArgument(f"process type {ch.type!r} given twice")
        seen.add(ch.type)
        if ch.size:
            sizes.get(ch.size)


def check_scale(
    changes: list[ScaleChange], process_types: Mapping[str, str], current_release: int
) -> None:
    """Refuse scaling a type the current release does not define, or the release phase."""
    defined = sorted(t for t in process_types if t != "release")
    if defined:
        unknown = [ch.type for ch in changes if ch.type not in process_types]
        if unknown:
            raise errors.InvalidArgument(
                f"no process type {', '.join(unknown)} in release v{current_release}; "
                f"it defines: {', '.join(defined)}",
                reason="unknown_process_type",
            )
    if any(ch.type == "release" for ch in changes):
        raise errors.InvalidArgument(
            "the release process type runs once per release; it cannot be scaled"
        )


def scale(
    formation: dict[str, FormationItem], changes: list[ScaleChange], sizes: SizeTable
) -> dict[str, FormationItem]:
    """The formation after ``changes`` (absolute quantities, deltas, sizes)."""
    new = dict(formation)
    for ch in changes:
        item = new.get(ch.type, FormationItem(0, DEFAULT_SIZE))
        qty = ch.quantity if ch.quantity is not None else item.quantity + (ch.delta or 0)
        validation.quantity(ch.type, qty)
        new[ch.type] = FormationItem(qty, sizes.get(ch.size).name if ch.size else item.size)
    return new
