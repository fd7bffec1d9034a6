"""Scheduler jobs in etcd: create, list, remove (any controller), and the leader's
one transaction that runs a job for a slot (records in controller/core/cron.py)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.core import cron
from controller.core.cron import JobRecord, Run, Schedule
from controller.core.scheduler import Placement
from controller.core.sizes import DEFAULT_SIZE
from controller.store.state import State
from slipway import errors


@dataclass(frozen=True)
class StoredJob:
    record: JobRecord
    revision: int  # the key's mod revision: a run is committed only against it


class Jobs:
    def __init__(self, state: State, *, minute_seconds: float = 60.0) -> None:
        self.state = state
        self.etcd = state.etcd
        self.keys = state.keys
        self.clock = state.clock
        self.sizes = state.sizes
        self.minute_seconds = minute_seconds

    async def of_app(self, app: str) -> list[JobRecord]:
        await self.state.get_app(app)
        return [s.record for s in await self.stored(app)]

    async def stored(self, app: str | None = None) -> list[StoredJob]:
        """Every job (of ``app``, or of all apps), oldest first."""
        kvs, _ = await self.etcd.get_prefix(self.keys.scheduler_jobs(app))
        jobs = [StoredJob(JobRecord.decode(kv.value), kv.mod_revision) for kv in kvs]
        return sorted(jobs, key=lambda s: (s.record.created_at, s.record.id))

    async def create(
        self, app: str, sched: Schedule, command: str, size: str, actor: str
    ) -> JobRecord:
        await self.state.get_app(app)
        size_name = self.sizes.get(size or DEFAULT_SIZE).name
        existing = await self.stored(app)
        if len(existing) >= cron.MAX_JOBS_PER_APP:
            raise errors.ResourceExhausted(
                f"{app} has {len(existing)} scheduler jobs, the most an app may have;"
                " remove one first (scheduler:remove)",
                reason="too_many_jobs",
            )
        record = cron.new_job(
            app,
            sched,
            command,
            size_name,
            actor=actor,
            now=self.clock.now(),
            minute_seconds=self.minute_seconds,
        )
        tx = self.etcd.tx
        ok = await self.etcd.txn(
            # The app must still exist when the job is written: a job of a
            # destroyed app would outlive it.
            compare=[
                tx.version(self.keys.app(app)) > 0,
                tx.version(self.keys.scheduler_job(app, record.id)) == 0,
            ],
            success=[tx.put(self.keys.scheduler_job(app, record.id), record.encode())],
        )
        if not ok:
            await self.state.get_app(app)  # gone: says so
            raise errors.Conflict("the job was created twice at once; try again")
        return record

    async def find(self, app: str, job_id: str) -> StoredJob:
        job_id = job_id.strip()
        if not job_id:
            raise errors.InvalidArgument(
                "name the job to remove by its id (see scheduler:jobs)", reason="missing_job"
            )
        await self.state.get_app(app)
        matches = [s for s in await self.stored(app) if s.record.id.startswith(job_id)]
        if not matches:
            raise errors.NotFound(
                f"{app} has no scheduler job {job_id!r}; see `slipway scheduler:jobs -a {app}`",
                reason="job_not_found",
            )
        if len(matches) > 1:
            raise errors.InvalidArgument(
                f"{job_id!r} names {len(matches)} jobs of {app}; give more of the id",
                reason="ambiguous_job",
            )
        return matches[0]

    async def remove(self, app: str, job_id: str) -> JobRecord:
        """Delete a job; a run already started goes on to its end."""
        found = await self.find(app, job_id)
        await self.etcd.delete(self.keys.scheduler_job(app, found.record.id))
        return found.record

    async def record_run(
        self, job: StoredJob, run: Run, placement: Placement, seq_revision: int
    ) -> bool:
        """Mark ``run.slot`` done and write the run's placement, as one transaction.

        Committed only if the job is as read (no other leader ran this slot, the
        job was not removed) and the name counter too (no other run took the name).
        """
        keys = self.keys
        tx = self.etcd.tx
        app = job.record.app
        return await self.etcd.txn(
            compare=[
                tx.mod(keys.scheduler_job(app, job.record.id)) == job.revision,
                tx.mod(keys.scheduler_seq(app)) == seq_revision,
                tx.version(keys.app(app)) > 0,
            ],
            success=[
                tx.put(keys.scheduler_job(app, job.record.id), cron.ran(job.record, run).encode()),
                tx.put(keys.scheduler_seq(app), str(placement.index).encode()),
                tx.put(keys.dyno(app, placement.instance_id), placement.encode()),
            ],
        )

    async def record_skip(self, job: StoredJob, slot: int) -> bool:
        tx = self.etcd.tx
        key = self.keys.scheduler_job(job.record.app, job.record.id)
        return await self.etcd.txn(
            compare=[tx.mod(key) == job.revision],
            success=[tx.put(key, cron.skipped(job.record, slot).encode())],
        )

    async def next_number(self, app: str) -> tuple[int, int]:
        """The next scheduler.N number and the counter's revision (0: no counter yet)."""
        kv = await self.etcd.get(self.keys.scheduler_seq(app))
        try:
            last = int(kv.value) if kv else 0
        except ValueError:
            last = 0
        return last + 1, kv.mod_revision if kv else 0
