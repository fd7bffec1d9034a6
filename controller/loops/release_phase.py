"""The release phase: a Procfile's ``release:`` command runs once per release before it goes live.

Every release whose slug has a release command -- made by a build, a config
change, a rollback or the API -- is created ``pending`` (not current) and listed
in its app's ``pending_releases`` (controller/store/state.py). On the leader,
:meth:`ReleasePhase.sweep` (run by the build watcher's loop) takes each one a
step further, reading everything from etcd every time:

    not started   place one one-off dyno ``release.N`` (``kind="oneoff"``) running
                  the command on release N, on a node with room (the scheduler's own
                  capacity rule); the placement and the release's ``phase_instance``
                  are written in one transaction
    running       wait for its agent to report it ``down`` with an exit status:
        exit 0            succeeded: it becomes current and the formation rolls
        exit != 0, crash  failed: dynos stay on the previous release
        node lost, timeout, no node with room   failed, with the reason
    superseded    a newer release went live before this one's command started:
                  failed without running it (old migrations never run after new code)

Settling is one transaction (:meth:`State.set_release_status`) that also takes
the release off ``pending_releases`` and removes the ``release.N`` placement. An
older release that succeeds after a newer one went live does not replace it. A
leader that dies midway leaves a state its successor continues from
(level-based, no lost step).

A release made by a build is mirrored onto the build record (``release_phase``,
notes, error), which ``slipway deploy`` and ``builds`` show; :meth:`sync_build`
does that from the release, so it too is level-based.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from controller.bus.buildbus import BuildBus
from controller.core.models import (
    RELEASE_FAILED,
    RELEASE_PENDING,
    RELEASE_SUCCEEDED,
    AppRecord,
    ReleaseRecord,
)
from controller.core.scheduler import CRASHED, DOWN, Placement
from controller.core.sizes import DEFAULT_SIZE, SizeTable
from controller.store import snapshot
from controller.store.build_records import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    BuildRecord,
    BuildStore,
)
from controller.store.state import State
from slipway import errors
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.records import StatusRecord

log = slog.get("controller.release_phase")

PLACE = "place"
CHECK = "check"


@dataclass(frozen=True)
class Outcome:
    status: str  # "wait" | succeeded | failed
    message: str = ""


WAIT = Outcome("wait")


def judge(
    status: StatusRecord | None,
    *,
    placement_exists: bool,
    node_alive: bool,
    elapsed: float,
    timeout: float,
) -> Outcome:
    """What the release dyno's reported state means for the release (pure)."""
    if status is not None and status.state == DOWN and status.exit_status >= 0:
        if status.exit_status == 0:
            return Outcome(RELEASE_SUCCEEDED, "release command succeeded")
        return Outcome(RELEASE_FAILED, f"release command exited with status {status.exit_status}")
    if status is not None and status.state == CRASHED:
        reason = f" ({status.reason})" if status.reason else ""
        return Outcome(RELEASE_FAILED, f"release command crashed{reason}")
    if status is not None and status.state == DOWN and not placement_exists:
        return Outcome(RELEASE_FAILED, "release dyno stopped without an exit status")
    if not node_alive and (status is None or status.state != DOWN):
        return Outcome(RELEASE_FAILED, "release dyno was lost with its node")
    if not placement_exists:
        return Outcome(RELEASE_FAILED, "release dyno was removed before it finished")
    if elapsed > timeout:
        return Outcome(RELEASE_FAILED, f"release command ran longer than {timeout:.0f} s")
    return WAIT


def next_step(release: ReleaseRecord, current_release: int) -> str | Outcome:
    """What a listed release needs next (pure): PLACE its dyno, CHECK the running
    one, or an Outcome to record at once."""
    if release.status != RELEASE_PENDING:
        return Outcome(release.status, release.error)  # settled; only bookkeeping is left
    if release.phase_instance:
        return CHECK
    if not release.release_command:
        return Outcome(RELEASE_SUCCEEDED, "no release command to run")
    if release.version < current_release:
        return Outcome(
            RELEASE_FAILED, f"superseded by v{current_release} before its release command ran"
        )
    return PLACE


def build_view(
    build: BuildRecord, release: ReleaseRecord, current_release: int
) -> BuildRecord | None:
    """The build record showing its release's phase (pure); None when nothing changes."""
    if build.release != release.version or build.release_phase in ("", *TERMINAL):
        return None
    new = replace(build, notes=list(build.notes))
    if release.phase_instance and build.release_phase != RUNNING:
        new.release_phase = RUNNING
        new.notes.append(f"-----> Running release command: {release.release_command}")
    if release.status == RELEASE_SUCCEEDED:
        new.release_phase = SUCCEEDED
        newer = current_release > release.version
        new.notes.append(
            f"       release command succeeded; v{current_release} is newer and stays live"
            if newer
            else "       release command succeeded"
        )
    elif release.status == RELEASE_FAILED:
        new.release_phase = FAILED
        new.error = f"Release v{release.version} failed: {release.error}"
        stay = f"; dynos stay on v{current_release}" if current_release else ""
        new.notes.append(f" !     {new.error}{stay}")
    return new if new != build else None


class ReleasePhase:
    def __init__(
        self,
        state: State,
        store: BuildStore,
        bus: BuildBus,
        sizes: SizeTable,
        *,
        timeout: float = 900.0,
        place_timeout: float = 120.0,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        self.state = state
        self.store = store
        self.bus = bus
        self.sizes = sizes
        self.timeout = timeout
        self.place_timeout = place_timeout

    @property
    def keys(self):  # type: ignore[no-untyped-def]
        return self.state.keys

    async def sweep(self) -> None:
        """One step for every pending release of every app."""
        for app in await self.state.list_apps():
            for version in list(app.pending_releases):
                try:
                    await self.step(app, version)
                except errors.SlipwayError as exc:
                    log.warning(
                        "release phase step failed", app=app.name, release=version, error=str(exc)
                    )

    async def step(self, app: AppRecord, version: int) -> None:
        kv = await self.state.etcd.get(self.keys.release(app.name, version))
        if kv is None:  # gone (app destroyed meanwhile): drop the entry
            await self.state.set_release_status(app.name, version, RELEASE_FAILED)
            return
        release = ReleaseRecord.decode(kv.value)
        todo = next_step(release, app.current_release)
        if todo == PLACE:
            await self._place(release)
        elif todo == CHECK:
            await self._check(release)
        elif isinstance(todo, Outcome):
            await self._finish(release, todo, announce=release.status == RELEASE_PENDING)

    async def _place(self, release: ReleaseRecord) -> None:
        app, version = release.app, release.version
        size = self.sizes.get(DEFAULT_SIZE)
        node = await snapshot.choose_one_off_node(
            self.state.etcd, self.keys, app, "release", size.memory_mb, stack=release.slug.stack
        )
        if node is None:
            if self.clock.now() - release.created_at > self.place_timeout:
                why = f"no node has {size.memory_mb} MB free for the release command" + (
                    f" on stack {release.slug.stack}" if release.slug.stack else ""
                )
                await self._finish(release, Outcome(RELEASE_FAILED, why))
            return
        placement = Placement(
            app=app,
            name=f"release.{version}",
            type="release",
            release=version,
            node=node.name,
            instance_id=uuid.uuid4().hex[:12],
            memory_mb=size.memory_mb,
            max_processes=size.max_processes,
            cpu_shares=size.cpu_shares,
            size=size.name,
            created_at=self.clock.now(),
            kind="oneoff",
            command=release.release_command,
        )
        release_key = self.keys.release(app, version)
        dyno_key = self.keys.dyno(app, placement.instance_id)

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            raw = cur[release_key]
            if raw is None:
                return {}
            fresh = ReleaseRecord.decode(raw)
            if fresh.status != RELEASE_PENDING or fresh.phase_instance:
                return {}  # settled, or placed already (by a previous leader)
            fresh.phase_instance = placement.instance_id
            fresh.phase_started_at = placement.created_at
            return {release_key: fresh.encode(), dyno_key: placement.encode()}

        if await self.state.etcd.update([release_key, dyno_key], mutate):
            log.info("release phase started", app=app, release=version, node=node.name)
            await self.bus.app_log(
                app, f"Running release command of v{version}: {release.release_command}"
            )
            await self._sync_build_of(release)

    async def _check(self, release: ReleaseRecord) -> None:
        k = self.keys
        instance = release.phase_instance
        status_kv = await self.state.etcd.get(k.status(release.app, instance))
        dyno_kv = await self.state.etcd.get(k.dyno(release.app, instance))
        status = StatusRecord.decode(status_kv.value) if status_kv else None
        node_alive = True
        if dyno_kv is not None:
            placement = Placement.decode(dyno_kv.value)
            node_alive = await self.state.etcd.get(k.node(placement.node)) is not None
        outcome = judge(
            status,
            placement_exists=dyno_kv is not None,
            node_alive=node_alive,
            elapsed=self.clock.now() - release.phase_started_at,
            timeout=self.timeout,
        )
        if outcome != WAIT:
            await self._finish(release, outcome)

    async def _finish(
        self, release: ReleaseRecord, outcome: Outcome, announce: bool = True
    ) -> None:
        app, version = release.app, release.version
        ok = outcome.status == RELEASE_SUCCEEDED
        try:
            _, live = await self.state.set_release_status(
                app,
                version,
                RELEASE_SUCCEEDED if ok else RELEASE_FAILED,
                error="" if ok else outcome.message,
            )
            current = (await self.state.get_app(app)).current_release
        except errors.NotFound:
            return  # the app went away meanwhile
        await self._sync_build_of(release)
        if not announce:
            return
        if live:
            log.info("release phase succeeded", app=app, release=version)
            await self.bus.app_log(app, f"Release v{version} is live")
        elif ok:
            log.info("release phase succeeded late", app=app, release=version, current=current)
            await self.bus.app_log(
                app, f"Release v{version} succeeded, but v{current} is newer and stays live"
            )
        else:
            log.warning("release phase failed", app=app, release=version, error=outcome.message)
            stay = f"; dynos stay on v{current}" if current else ""
            await self.bus.app_log(app, f"Release v{version} failed: {outcome.message}{stay}")

    # -- build records ----------------------------------------------------

    async def _sync_build_of(self, release: ReleaseRecord) -> None:
        if release.build_id:
            record = await self.store.find(release.build_id, release.app)
            if record is not None and record.release == release.version:
                await self.sync_build(record)

    async def sync_build(self, record: BuildRecord) -> None:
        """Show the phase of the release a build made on its record (idempotent)."""
        if not record.release:
            return
        try:
            app = await self.state.get_app(record.app)
        except errors.NotFound:
            return
        kv = await self.state.etcd.get(self.keys.release(record.app, record.release))
        if kv is None:
            return
        release = ReleaseRecord.decode(kv.value)
        if build_view(record, release, app.current_release) is not None:
            await self.store.update(
                record.app, record.id, lambda r: build_view(r, release, app.current_release)
            )
