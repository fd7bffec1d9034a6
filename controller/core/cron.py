"""Scheduler jobs, the pure part: schedules, slots, the job record, which runs are due.

A job runs its command as a one-off dyno ``scheduler.N`` on the app's current
release, as Heroku Scheduler does: every 10 minutes (at :00, :10, ...), every
hour at a minute of the hour (``--at :MM``), or every day at a time of day
(``--at HH:MM``, UTC). Time is cut into *slots*, one per run: slot ``k`` of a
job starts at ``offset + k * period`` seconds after the epoch, and the job is
due while the current slot is newer than the last one it ran for.

Exactly once per slot: the run and the record of it are one etcd transaction
(controller/loops/cron.py), guarded by the job's revision, so a leader that dies
before it leaves the slot to the next leader and one that dies after leaves
nothing to do. Slots missed while no controller led are not run later, only the
current one (Heroku's Scheduler is best effort too; a backlog of runs after an
outage would be worse). A run started late in its slot still runs.

``minute_seconds`` is how long a scheduler minute lasts: 60 in production;
tests shrink it so a "10 minute" job runs every few seconds.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from slipway import errors

SCHEDULER_TYPE = "scheduler"
# Heroku Scheduler's frequencies, in minutes.
EVERY_MINUTES = {"10m": 10, "1h": 60, "1d": 1440}
MAX_JOBS_PER_APP = 50
MAX_COMMAND_BYTES = 4096
# Runs kept in a job's record (scheduler:jobs --json shows them).
RECENT_RUNS = 20

_HOUR_AT = re.compile(r"^:?([0-5][0-9])$")
_DAY_AT = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True)
class Schedule:
    every: str  # a key of EVERY_MINUTES
    at: str = ""  # "" (10m), ":MM" (1h) or "HH:MM" (1d), as the user reads it

    @property
    def period_minutes(self) -> int:
        return EVERY_MINUTES[self.every]

    @property
    def offset_minutes(self) -> int:
        if self.every == "1h":
            return int(self.at[1:])
        if self.every == "1d":
            hours, minutes = self.at.split(":")
            return int(hours) * 60 + int(minutes)
        return 0

    def describe(self) -> str:
        if self.every == "10m":
            return "every 10 minutes"
        if self.every == "1h":
            return f"every hour at {self.at}"
        return f"every day at {self.at} UTC"


def schedule(every: str, at: str = "") -> Schedule:
    """Check ``--every`` and ``--at``, with a sentence saying what is wrong."""
    every = every.strip().lower()
    at = at.strip()
    if every not in EVERY_MINUTES:
        raise errors.InvalidArgument(
            f"--every is one of {', '.join(EVERY_MINUTES)} (Heroku Scheduler's frequencies);"
            f" not {every!r}",
            reason="invalid_schedule",
        )
    if every == "10m":
        if at:
            raise errors.InvalidArgument(
                "a job every 10 minutes runs at :00, :10, :20...; it takes no --at",
                reason="invalid_schedule",
            )
        return Schedule(every)
    if every == "1h":
        match = _HOUR_AT.match(at or ":00")
        if match is None:
            raise errors.InvalidArgument(
                f"an hourly job's --at is a minute of the hour, :00 to :59; not {at!r}",
                reason="invalid_schedule",
            )
        return Schedule(every, f":{match.group(1)}")
    match = _DAY_AT.match(at or "00:00")
    if match is None:
        raise errors.InvalidArgument(
            f"a daily job's --at is a UTC time of day, HH:MM from 00:00 to 23:59; not {at!r}",
            reason="invalid_schedule",
        )
    return Schedule(every, f"{match.group(1)}:{match.group(2)}")


def check_command(command: str) -> str:
    command = command.strip()
    if not command:
        raise errors.InvalidArgument(
            "no command given: slipway scheduler:create --every 10m -a APP -- COMMAND",
            reason="missing_command",
        )
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise errors.InvalidArgument(
            f"the command is over {MAX_COMMAND_BYTES} bytes", reason="command_too_long"
        )
    if "\n" in command or "\x00" in command:
        raise errors.InvalidArgument(
            "a job's command is one line; put longer scripts in a file of the app",
            reason="invalid_command",
        )
    return command


def slot_of(sched: Schedule, t: float, minute_seconds: float) -> int:
    """The index of the slot running at time ``t``."""
    period = sched.period_minutes * minute_seconds
    offset = sched.offset_minutes * minute_seconds
    return int((t - offset) // period)


def slot_start(sched: Schedule, slot: int, minute_seconds: float) -> float:
    return (sched.offset_minutes + slot * sched.period_minutes) * minute_seconds


@dataclass(frozen=True)
class Run:
    slot: int
    started_at: float  # when the slot began (the time the run was due)
    placed_at: float  # when the leader placed the dyno
    dyno: str  # scheduler.N
    release: int


@dataclass(frozen=True)
class JobRecord:
    id: str
    app: str
    command: str
    every: str
    at: str
    size: str
    created_at: float
    created_by: str
    # The newest slot this job ran for, or was created in (that one is not run).
    last_slot: int
    recent_runs: list[Run] = field(default_factory=list)

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.every, self.at)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> JobRecord:
        obj: dict[str, Any] = json.loads(data)
        runs = [Run(**r) for r in obj.pop("recent_runs", [])]
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        return cls(**known, recent_runs=runs)

    @property
    def last_run(self) -> Run | None:
        return self.recent_runs[-1] if self.recent_runs else None

    def next_run_at(self, now: float, minute_seconds: float) -> float:
        """When the next run is due (now, if the current slot has not run yet)."""
        current = slot_of(self.schedule, now, minute_seconds)
        if current > self.last_slot:
            return now
        return slot_start(self.schedule, self.last_slot + 1, minute_seconds)


def new_job(
    app: str,
    sched: Schedule,
    command: str,
    size: str,
    *,
    actor: str,
    now: float,
    minute_seconds: float,
) -> JobRecord:
    return JobRecord(
        id=uuid.uuid4().hex[:8],
        app=app,
        command=check_command(command),
        every=sched.every,
        at=sched.at,
        size=size,
        created_at=now,
        created_by=actor,
        # The slot in progress when the job is created is not run: the first
        # run is at the next boundary, as with Heroku.
        last_slot=slot_of(sched, now, minute_seconds),
    )


def due_slot(job: JobRecord, now: float, minute_seconds: float) -> int | None:
    """The slot ``job`` should run for now, or None when it already ran for it."""
    current = slot_of(job.schedule, now, minute_seconds)
    return current if current > job.last_slot else None


@dataclass(frozen=True)
class DueRun:
    job: JobRecord
    slot: int


def plan_runs(
    jobs: Iterable[JobRecord], apps: set[str], now: float, minute_seconds: float
) -> list[DueRun]:
    """Every job of a live app whose current slot has not run yet, oldest job first."""
    due = []
    for job in sorted(jobs, key=lambda j: (j.created_at, j.id)):
        if job.app not in apps:
            continue
        slot = due_slot(job, now, minute_seconds)
        if slot is not None:
            due.append(DueRun(job, slot))
    return due


def ran(job: JobRecord, run: Run) -> JobRecord:
    """The record after ``run``: its slot is done, the run kept among the recent ones."""
    runs = [*job.recent_runs, run][-RECENT_RUNS:]
    return replace(job, last_slot=run.slot, recent_runs=runs)


def skipped(job: JobRecord, slot: int) -> JobRecord:
    """The record after a slot that could not run (the app has nothing to run)."""
    return replace(job, last_slot=slot)


def run_limit(every: str, minute_seconds: float) -> float:
    """How long a scheduler dyno may run: its job's interval, as on Heroku (a
    10-minute job's dyno is stopped after about 10 minutes)."""
    return EVERY_MINUTES[every] * minute_seconds
