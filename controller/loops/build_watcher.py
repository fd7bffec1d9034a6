"""The leader's build loop: builder statuses -> build records -> releases.

Two parts, both running only while this controller leads:

- a **durable JetStream consumer** on ``builds.status.*`` (BUILD_EVENTS). A
  status is acknowledged only after it is applied to the build record, so a
  controller that dies or loses leadership mid-way leaves it unacknowledged and
  the next leader gets it again. The durable name derives from the etcd prefix,
  so two Slipway installations sharing one NATS never take each other's statuses.
- a **sweep** (level-based, every ``sweep_seconds`` and after each status):
  every unfinished build is looked at again. A succeeded build without a
  release gets one: the release and the record's ``release = N`` are written in
  one etcd transaction (``State.create_release`` hook), so a build is released
  exactly once however many times its status is seen. A build whose release
  has a release command shows that release's phase (mirrored from the release
  record); a build stuck past its time limit is marked failed. The same loop
  then drives the release phase of every pending release, whatever made it
  (controller/loops/release_phase.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import nats.errors
import nats.js.api
import nats.js.errors

from controller.bus.buildbus import BuildBus
from controller.core.models import SlugInfo
from controller.loops.leader import Leadership
from controller.loops.release_phase import ReleasePhase
from controller.store.build_records import (
    FAILED,
    PENDING,
    SUCCEEDED,
    BuildRecord,
    BuildStore,
    apply_status,
    timed_out,
)
from controller.store.state import State
from slipway import buildproto, errors
from slipway import log as slog
from slipway.aio import raise_if_cancelling
from slipway.clock import Clock, SystemClock

log = slog.get("controller.build_watcher")


class _AlreadyReleased(Exception):
    """The build record already names its release: nothing to create."""


def consumer_name(prefix: str) -> str:
    return "controller-" + hashlib.sha256(prefix.encode()).hexdigest()[:12]


class BuildWatcher:
    def __init__(
        self,
        state: State,
        store: BuildStore,
        bus: BuildBus,
        leadership: Leadership,
        release_phase: ReleasePhase,
        *,
        build_timeout: float = 900.0,
        grace: float = 120.0,
        pending_timeout: float = 3600.0,
        sweep_seconds: float = 1.0,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        self.state = state
        self.store = store
        self.bus = bus
        self.leadership = leadership
        self.release_phase = release_phase
        self.build_timeout = build_timeout
        self.grace = grace
        self.pending_timeout = pending_timeout
        self.sweep_seconds = sweep_seconds
        self.wake = asyncio.Event()

    async def run(self) -> None:
        lead = self.leadership.run_while_leading
        async with asyncio.TaskGroup() as tg:
            tg.create_task(lead("build statuses", self._consume, ready=self.bus.connected))
            tg.create_task(
                lead(
                    "build sweep",
                    self.sweep,
                    wake=self.wake,
                    every=self.sweep_seconds,
                    ready=self.bus.connected,
                )
            )

    # -- statuses ---------------------------------------------------------

    async def _consume(self) -> None:
        """Apply statuses as they come; NATS trouble raises (the leader loop backs off)."""
        sub = await self.bus.js.pull_subscribe(
            f"{buildproto.STATUS_PREFIX}.*",
            durable=consumer_name(self.state.keys.prefix),
            stream=buildproto.EVENTS_STREAM,
            config=nats.js.api.ConsumerConfig(
                ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                ack_wait=30,
                deliver_policy=nats.js.api.DeliverPolicy.ALL,
            ),
        )
        try:
            while True:
                try:
                    msgs = await sub.fetch(32, timeout=2.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    raise_if_cancelling()
                    continue
                raise_if_cancelling()
                for msg in msgs:
                    await self._on_status(msg.data)
                    await msg.ack()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_status(self, data: bytes) -> None:
        try:
            status = buildproto.BuildStatus.decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("malformed build status dropped", error=str(exc))
            return
        record = await self.store.find(status.build_id, status.app)
        if record is None:
            return  # another installation's build, or one whose app is gone
        updated = await self.store.update(
            record.app, record.id, lambda r: apply_status(r, status, now=self.clock.now())
        )
        if updated is not None:
            log.info(
                "build status",
                app=updated.app,
                build=updated.id,
                status=updated.status,
                attempt=status.attempt,
            )
            await self.settle(updated)

    # -- the sweep --------------------------------------------------------

    async def sweep(self) -> None:
        for record in await self.store.list():
            if not record.finished:
                try:
                    await self.settle(record)
                except errors.SlipwayError as exc:
                    log.warning(
                        "build step failed", app=record.app, build=record.id, error=str(exc)
                    )
        await self.release_phase.sweep()

    async def settle(self, record: BuildRecord) -> None:
        """Take one unfinished build one step further (idempotent)."""
        if record.status == SUCCEEDED and record.release == 0:
            await self._release(record)
            return
        if record.status == SUCCEEDED and record.release_phase:
            await self.release_phase.sync_build(record)
            return
        now = self.clock.now()
        why = timed_out(record, now, self.build_timeout + self.grace, self.pending_timeout)
        if why:

            def fail(r: BuildRecord) -> BuildRecord | None:
                if r.status in (SUCCEEDED, FAILED):
                    return None
                r.status, r.error, r.finished_at = FAILED, f"Build failed: {why}", now
                return r

            if await self.store.update(record.app, record.id, fail):
                log.warning("build timed out", app=record.app, build=record.id, error=why)

    async def _release(self, record: BuildRecord) -> None:
        key = self.state.keys.build(record.app, record.id)

        def hook(cur: dict[bytes, bytes | None], release):  # type: ignore[no-untyped-def]
            raw = cur[key]
            if raw is None:
                raise _AlreadyReleased  # the build (and so its app) is gone
            fresh = BuildRecord.decode(raw)
            if fresh.release:
                raise _AlreadyReleased
            fresh.release = release.version
            fresh.release_phase = PENDING if fresh.release_command else ""
            return {key: fresh.encode()}

        slug = SlugInfo(
            digest=record.slug_digest,
            size_bytes=int(record.slug.get("size") or 0),
            stack=str(record.slug.get("stack") or ""),
            source_version=record.source_version,
        )
        started = self.clock.monotonic()
        try:
            release = await self.state.create_release(
                record.app,
                slug,
                record.process_types,
                f"Deploy {record.source_version[:7]}",
                record.created_by or "builder",
                build_id=record.id,
                release_command=record.release_command,
                hook_keys=[key],
                hook=hook,
            )
        except _AlreadyReleased:
            return
        except errors.NotFound:
            return  # app destroyed while building
        log.info(
            "release created",
            app=record.app,
            build=record.id,
            release=release.version,
            duration_ms=round((self.clock.monotonic() - started) * 1000, 1),
        )
        phase = " (pending its release command)" if record.release_command else ""
        await self.bus.app_log(
            record.app,
            f"Release v{release.version} created by {release.created_by}: "
            f"{release.description}{phase}",
        )
        self.wake.set()
