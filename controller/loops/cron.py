"""The leader's scheduler loop: runs each due job as a one-off dyno ``scheduler.N``.

Level-based: each pass reads every job and plans with
``controller.core.cron.plan_runs`` (pure) which slots are due, then places one
dyno per due job. The placement, the job's "ran for slot k" and the name counter
are one etcd transaction guarded by the job's revision (Jobs.record_run), so a
slot runs at most once however many controllers believe they lead, and a leader
killed before committing leaves the slot to the next one. Nothing is kept
between passes but which "no room" lines were already logged.

A scheduler dyno is an ordinary detached one-off: the agent runs it on the
app's current release, its output goes to the app's log, the reaper removes it
when it exits and stops it once it has run for its job's interval.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from controller.bus.apilog import ApiLog
from controller.core import cron
from controller.core.cron import DueRun, Run
from controller.core.scheduler import Placement
from controller.core.sizes import DEFAULT_SIZE
from controller.loops.leader import Leadership
from controller.store.cron import Jobs, StoredJob
from controller.store.snapshot import choose_one_off_node
from slipway import errors
from slipway import log as slog

log = slog.get("controller.cron")


def slot_label(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class CronLoop:
    def __init__(
        self,
        jobs: Jobs,
        leadership: Leadership,
        *,
        tick: float = 5.0,
        app_log: ApiLog | None = None,
    ) -> None:
        self.jobs = jobs
        self.state = jobs.state
        self.leadership = leadership
        self.sizes = jobs.sizes
        self.tick = tick
        self.app_log = app_log
        self.clock = jobs.clock
        self.minute_seconds = jobs.minute_seconds
        self._told_no_room: set[tuple[str, int]] = set()

    async def run(self) -> None:
        await self.leadership.run_while_leading("scheduler", self.pass_once, every=self.tick)

    async def pass_once(self) -> list[Run]:
        """One read -> plan -> apply; returns the runs this pass started."""
        apps = {a.name for a in await self.state.list_apps()}
        stored = {s.record.id: s for s in await self.jobs.stored()}
        now = self.clock.now()
        due = cron.plan_runs((s.record for s in stored.values()), apps, now, self.minute_seconds)
        started = []
        for item in due:
            if not self.leadership.is_leader:
                break
            run = await self._start(stored[item.job.id], item, now)
            if run is not None:
                started.append(run)
        current = {(d.job.id, d.slot) for d in due}
        self._told_no_room &= current
        return started

    def _app_line(self, app: str, process: str, message: str) -> None:
        if self.app_log is not None:
            self.app_log.emit(app, message, source="heroku", process=process)

    async def _start(self, stored: StoredJob, item: DueRun, now: float) -> Run | None:
        job = item.job
        slot_at = cron.slot_start(job.schedule, item.slot, self.minute_seconds)
        try:
            release = await self.state.get_release(job.app, 0)
        except errors.NotFound:
            release = None
        if release is None or not release.slug.digest:
            if await self.jobs.record_skip(stored, item.slot):
                self._app_line(
                    job.app,
                    "scheduler",
                    f"Skipping job {job.id} for {slot_label(slot_at)}: the app has no"
                    " release to run yet (deploy first)",
                )
            return None
        try:
            size = self.sizes.get(job.size)
        except errors.InvalidArgument:
            # The operator removed the size since: run on the default instead of never.
            size = self.sizes.get(DEFAULT_SIZE)
        node = await choose_one_off_node(
            self.state.etcd,
            self.state.keys,
            job.app,
            cron.SCHEDULER_TYPE,
            size.memory_mb,
            stack=release.slug.stack,
        )
        if node is None:
            # Tried again every pass while the slot lasts.
            log.warning("scheduler run waits for room", app=job.app, job=job.id, slot=item.slot)
            if (job.id, item.slot) not in self._told_no_room:
                self._told_no_room.add((job.id, item.slot))
                self._app_line(
                    job.app,
                    "scheduler",
                    f"Job {job.id} waits: no node has {size.memory_mb} MB free for a"
                    f" {size.name} dyno",
                )
            return None
        number, seq_revision = await self.jobs.next_number(job.app)
        name = f"{cron.SCHEDULER_TYPE}.{number}"
        placement = Placement(
            app=job.app,
            name=name,
            type=cron.SCHEDULER_TYPE,
            release=release.version,
            node=node.name,
            instance_id=uuid.uuid4().hex[:12],
            memory_mb=size.memory_mb,
            max_processes=size.max_processes,
            cpu_shares=size.cpu_shares,
            size=size.name,
            created_at=now,
            kind="oneoff",
            command=job.command,
            stop_after=cron.run_limit(job.every, self.minute_seconds),
        )
        run = Run(
            slot=item.slot, started_at=slot_at, placed_at=now, dyno=name, release=release.version
        )
        if not await self.jobs.record_run(stored, run, placement, seq_revision):
            # Another leader ran the slot, the job went, or a name was taken: the
            # next pass reads again.
            log.info("scheduler run not committed", app=job.app, job=job.id, slot=item.slot)
            return None
        log.info(
            "scheduler run placed",
            app=job.app,
            job=job.id,
            slot=item.slot,
            dyno=name,
            node=node.name,
            release=release.version,
        )
        self._app_line(
            job.app,
            name,
            f"Scheduled by job {job.id} ({job.schedule.describe()}) for {slot_label(slot_at)}",
        )
        return run
