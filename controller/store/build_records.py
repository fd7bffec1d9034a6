"""Build records in etcd, and the pure rules that move them along.

    {prefix}/builds/{app}/{build_id}   BuildRecord (JSON)

A build is ``pending`` (queued), ``running`` (a builder holds it), then
``succeeded`` or ``failed``. Builder statuses arrive at least once and maybe out
of order (a retried job publishes a second ``running`` with a higher attempt),
so :func:`apply_status` is idempotent: the first terminal status wins, a
status of an older attempt never undoes a newer one, and ``attempts`` only
grows, so the record shows retries.

A succeeded build with a ``release_command`` makes a pending release; the
release phase is driven on the release (controller/loops/release_phase.py) and
mirrored here (``release_phase``: pending -> running -> succeeded | failed,
with notes and the error), because ``slipway deploy`` and ``builds`` show the
build. The build is *finished* only when that phase has settled too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from slipway import buildproto, errors
from slipway.etcd import Etcd
from slipway.keys import Keys

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TERMINAL = (SUCCEEDED, FAILED)


def new_build_id() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


@dataclass
class BuildRecord:
    id: str
    app: str
    status: str = PENDING
    source_digest: str = ""
    source_size: int = 0
    source_version: str = ""
    # What the app asked for (empty: auto-detect); replaced by what ran once built.
    buildpacks: list[str] = field(default_factory=list)
    attempts: int = 0
    builder: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    created_by: str = ""
    error: str = ""
    slug: dict[str, Any] = field(default_factory=dict)
    process_types: dict[str, str] = field(default_factory=dict)
    release_command: str = ""
    # Release created from this build; written in the same etcd transaction as
    # the release itself, so a build releases exactly once.
    release: int = 0
    release_phase: str = ""  # "" | pending | running | succeeded | failed
    # Lines the controller adds after the builder's output (release phase).
    notes: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> BuildRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})

    @property
    def source_object(self) -> str:
        """Name of the uploaded tarball in the `sources` bucket."""
        return self.id

    @property
    def finished(self) -> bool:
        """Nothing more will happen: failed, or succeeded with the release settled."""
        if self.status == FAILED:
            return True
        if self.status != SUCCEEDED:
            return False
        if self.release_command:
            return self.release_phase in TERMINAL
        return self.release > 0

    @property
    def slug_digest(self) -> str:
        return str(self.slug.get("digest") or "")


def apply_status(
    record: BuildRecord, status: buildproto.BuildStatus, *, now: float
) -> BuildRecord | None:
    """The record after a builder status, or None when the status changes nothing.

    ``now`` stands in for a status without its own time (``ts``).
    """
    if record.status in TERMINAL:
        return None  # first terminal status wins; later ones are duplicates or stale
    if status.attempt < record.attempts and status.status != buildproto.SUCCEEDED:
        return None  # an older attempt speaking late: the newer one rules
    new = replace(record, attempts=max(record.attempts, status.attempt))
    if status.builder:
        new.builder = status.builder
    if status.status == buildproto.RUNNING:
        new.status = RUNNING
        new.started_at = record.started_at or status.ts or now
    elif status.status == buildproto.SUCCEEDED:
        if not status.slug or not status.slug.get("digest"):
            new.status = FAILED
            new.error = "the builder reported success without a slug"
        else:
            new.status = SUCCEEDED
            new.slug = dict(status.slug)
            new.process_types = {k: v for k, v in status.process_types.items() if k != "release"}
            new.release_command = status.release_command or ""
            if status.buildpacks:
                new.buildpacks = list(status.buildpacks)
        new.finished_at = status.ts or now
    elif status.status == buildproto.FAILED:
        new.status = FAILED
        new.error = status.error or "the build failed"
        new.finished_at = status.ts or now
    else:
        return None
    new.started_at = new.started_at or new.finished_at
    return new if new != record else None


def timed_out(record: BuildRecord, now: float, limit: float, pending_limit: float) -> str | None:
    """Why a build that no builder finished should be given up, or None."""
    if record.status == RUNNING and now - (record.started_at or record.created_at) > limit:
        return f"the build ran longer than {limit:.0f} s without finishing"
    if record.status == PENDING and now - record.created_at > pending_limit:
        return f"no builder took the build within {pending_limit:.0f} s"
    return None


class BuildStore:
    """CRUD of build records; every change guarded by revision."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def create(self, record: BuildRecord) -> None:
        if not await self.etcd.create(self.keys.build(record.app, record.id), record.encode()):
            raise errors.AlreadyExists(f"build {record.id} already exists")

    async def get(self, app: str, build_id: str) -> BuildRecord:
        kv = await self.etcd.get(self.keys.build(app, build_id))
        if kv is None:
            raise errors.NotFound(
                f"build {build_id!r} of {app!r} not found; see `slipway builds -a {app}`",
                reason="build_not_found",
            )
        return BuildRecord.decode(kv.value)

    async def list(self, app: str | None = None) -> list[BuildRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.builds(app))
        records = [BuildRecord.decode(kv.value) for kv in kvs]
        return sorted(records, key=lambda b: (-b.created_at, b.id))

    async def find(self, build_id: str, app: str = "") -> BuildRecord | None:
        """A build by id, read directly when its app is known; else searched for
        (status messages from builders that predate ``BuildStatus.app``)."""
        if app:
            kv = await self.etcd.get(self.keys.build(app, build_id))
            return BuildRecord.decode(kv.value) if kv is not None else None
        for record in await self.list():
            if record.id == build_id:
                return record
        return None

    async def update(
        self, app: str, build_id: str, change: Callable[[BuildRecord], BuildRecord | None]
    ) -> BuildRecord | None:
        """Apply ``change`` (None: leave as is); returns the stored record, or None if gone."""
        key = self.keys.build(app, build_id)
        out: list[BuildRecord | None] = []

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            raw = cur[key]
            out.clear()
            if raw is None:
                out.append(None)
                return {}
            record = BuildRecord.decode(raw)
            new = change(record)
            out.append(new or record)
            return {key: new.encode()} if new is not None else {}

        await self.etcd.update([key], mutate)
        return out[-1] if out else None

    async def delete_app(self, app: str) -> int:
        return await self.etcd.delete_prefix(self.keys.builds(app))
