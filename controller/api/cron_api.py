"""The scheduler job RPCs of PlatformService (mixed into controller.api.platform.PlatformAPI)."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from controller.api.convert import timestamp
from controller.api.endpoint import unary
from controller.core import cron
from controller.core.access import Identity
from controller.core.cron import JobRecord
from controller.store.cron import Jobs
from slipway.clock import Clock
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext


def job_message(job: JobRecord, now: float, minute_seconds: float) -> pb.SchedulerJob:
    return pb.SchedulerJob(
        id=job.id,
        app=job.app,
        command=job.command,
        every=job.every,
        at=job.at,
        schedule=job.schedule.describe(),
        size=job.size,
        created_at=timestamp(job.created_at),
        created_by=job.created_by,
        next_run_at=timestamp(job.next_run_at(now, minute_seconds)),
        recent_runs=[
            pb.SchedulerRun(
                due_at=timestamp(r.started_at),
                started_at=timestamp(r.placed_at),
                dyno=r.dyno,
                release=r.release,
            )
            for r in job.recent_runs
        ],
    )


class CronRPCs:
    jobs: Jobs
    clock: Clock

    def _log(self, app: str, *messages: str) -> None: ...

    def _job(self, job: JobRecord) -> pb.SchedulerJob:
        return job_message(job, self.clock.now(), self.jobs.minute_seconds)

    @unary
    async def ListSchedulerJobs(
        self, request: pb.ListSchedulerJobsRequest, context: Ctx, who: Identity
    ) -> pb.ListSchedulerJobsResponse:
        jobs = await self.jobs.of_app(request.app)
        return pb.ListSchedulerJobsResponse(jobs=[self._job(j) for j in jobs])

    @unary
    async def CreateSchedulerJob(
        self, request: pb.CreateSchedulerJobRequest, context: Ctx, who: Identity
    ) -> pb.SchedulerJobResponse:
        sched = cron.schedule(request.every, request.at)
        job = await self.jobs.create(request.app, sched, request.command, request.size, who.actor)
        self._log(request.app, f"Add scheduler job {job.id} ({sched.describe()}) by {who.actor}")
        return pb.SchedulerJobResponse(job=self._job(job))

    @unary
    async def RemoveSchedulerJob(
        self, request: pb.RemoveSchedulerJobRequest, context: Ctx, who: Identity
    ) -> pb.SchedulerJobResponse:
        job = await self.jobs.remove(request.app, request.job)
        self._log(request.app, f"Remove scheduler job {job.id} by {who.actor}")
        return pb.SchedulerJobResponse(job=self._job(job))
