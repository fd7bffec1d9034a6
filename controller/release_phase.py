"""The release phase: run a Procfile's ``release:`` command once before a release goes live.

A build whose slug has a release command makes its release ``pending`` (not
current). This module places one one-off dyno ``release.N`` (``kind="oneoff"``)
running the command on release N, on a node with room (the scheduler's own
capacity rule), then waits for its agent to report it ``down`` with an exit
status:

    exit 0            release succeeded: it becomes current and the formation rolls
    exit != 0, crash  release failed: dynos stay on the previous release
    node lost, timeout, no node with room   failed, with the reason

The one-off placement is removed once the outcome is recorded. Each step is a
guarded etcd transaction on the build record, so a leader that dies midway
leaves a state its successor continues from (level-based, no lost step).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from controller import snapshot
from controller.build_records import FAILED, RUNNING, SUCCEEDED, BuildRecord, BuildStore
from controller.buildbus import BuildBus
from controller.models import RELEASE_FAILED, RELEASE_SUCCEEDED
from controller.scheduler import CRASHED, DOWN, Placement
from controller.sizes import DEFAULT_SIZE, SizeTable
from controller.state import State
from slipway import errors
from slipway import log as slog
from slipway.records import StatusRecord

log = slog.get("controller.release_phase")

PHASE_PENDING = "pending"


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
            return Outcome(SUCCEEDED, "release command succeeded")
        return Outcome(FAILED, f"release command exited with status {status.exit_status}")
    if status is not None and status.state == CRASHED:
        reason = f" ({status.reason})" if status.reason else ""
        return Outcome(FAILED, f"release command crashed{reason}")
    if status is not None and status.state == DOWN and not placement_exists:
        return Outcome(FAILED, "release dyno stopped without an exit status")
    if not node_alive and (status is None or status.state != DOWN):
        return Outcome(FAILED, "release dyno was lost with its node")
    if not placement_exists:
        return Outcome(FAILED, "release dyno was removed before it finished")
    if elapsed > timeout:
        return Outcome(FAILED, f"release command ran longer than {timeout:.0f} s")
    return WAIT


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
    ) -> None:
        self.state = state
        self.store = store
        self.bus = bus
        self.sizes = sizes
        self.timeout = timeout
        self.place_timeout = place_timeout

    @property
    def keys(self):  # type: ignore[no-untyped-def]
        return self.state.keys

    async def step(self, record: BuildRecord) -> None:
        if record.release_phase == PHASE_PENDING:
            await self._place(record)
        elif record.release_phase == RUNNING:
            await self._check(record)

    async def _place(self, record: BuildRecord) -> None:
        size = self.sizes.get(DEFAULT_SIZE)
        node = await snapshot.choose_one_off_node(
            self.state.etcd, self.keys, record.app, "release", size.memory_mb
        )
        if node is None:
            waited = time.time() - (record.finished_at or record.created_at)
            if waited > self.place_timeout:
                await self._finish(
                    record,
                    Outcome(
                        FAILED, f"no node has {size.memory_mb} MB free for the release command"
                    ),
                    None,
                )
            return
        placement = Placement(
            app=record.app,
            name=f"release.{record.release}",
            type="release",
            release=record.release,
            node=node.name,
            instance_id=uuid.uuid4().hex[:12],
            memory_mb=size.memory_mb,
            max_processes=size.max_processes,
            size=size.name,
            created_at=time.time(),
            kind="oneoff",
            command=record.release_command,
        )
        build_key = self.keys.build(record.app, record.id)
        dyno_key = self.keys.dyno(record.app, placement.instance_id)

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            raw = cur[build_key]
            if raw is None:
                return {}
            fresh = BuildRecord.decode(raw)
            if fresh.release_phase != PHASE_PENDING or fresh.release_instance:
                return {}  # someone (a previous leader) placed it already
            fresh.release_phase = RUNNING
            fresh.release_instance = placement.instance_id
            fresh.release_started_at = placement.created_at
            fresh.notes.append(f"-----> Running release command: {record.release_command}")
            return {build_key: fresh.encode(), dyno_key: placement.encode()}

        writes = await self.state.etcd.update([build_key, dyno_key], mutate)
        if writes:
            log.info(
                "release phase started",
                app=record.app,
                build=record.id,
                release=record.release,
                node=node.name,
            )

    async def _check(self, record: BuildRecord) -> None:
        k = self.keys
        instance = record.release_instance
        status_kv = await self.state.etcd.get(k.status(record.app, instance))
        dyno_kv = await self.state.etcd.get(k.dyno(record.app, instance))
        status = StatusRecord.decode(status_kv.value) if status_kv else None
        node_alive = True
        if dyno_kv is not None:
            placement = Placement.decode(dyno_kv.value)
            node_alive = await self.state.etcd.get(k.node(placement.node)) is not None
        outcome = judge(
            status,
            placement_exists=dyno_kv is not None,
            node_alive=node_alive,
            elapsed=time.time() - record.release_started_at,
            timeout=self.timeout,
        )
        if outcome.status != "wait":
            await self._finish(record, outcome, instance)

    async def _finish(self, record: BuildRecord, outcome: Outcome, instance: str | None) -> None:
        ok = outcome.status == SUCCEEDED
        try:
            await self.state.set_release_status(
                record.app, record.release, RELEASE_SUCCEEDED if ok else RELEASE_FAILED
            )
        except errors.NotFound:
            pass  # the app went away meanwhile; still settle the build
        previous = 0
        if not ok:
            try:
                previous = (await self.state.get_app(record.app)).current_release
            except errors.NotFound:
                pass

        def settle(r: BuildRecord) -> BuildRecord | None:
            if r.release_phase not in (PHASE_PENDING, RUNNING):
                return None
            r.release_phase = SUCCEEDED if ok else FAILED
            if ok:
                r.notes.append(f"       {outcome.message}")
            else:
                r.error = f"Release v{r.release} failed: {outcome.message}"
                stay = f"; dynos stay on v{previous}" if previous else ""
                r.notes.append(f" !     {r.error}{stay}")
            return r

        await self.store.update(record.app, record.id, settle)
        if instance:
            await self.state.etcd.delete(self.keys.dyno(record.app, instance))
        if ok:
            log.info("release phase succeeded", app=record.app, release=record.release)
            await self.bus.app_log(record.app, f"Release v{record.release} is live")
        else:
            log.warning(
                "release phase failed",
                app=record.app,
                release=record.release,
                error=outcome.message,
            )
            await self.bus.app_log(
                record.app, f"Release v{record.release} failed: {outcome.message}"
            )
