"""Scheduler jobs, the pure part: schedules, slots and which runs are due."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.core import cron
from controller.core.cron import JobRecord, Run
from controller.core.scheduler import Placement
from controller.loops.oneoff import finished_runs, overdue
from slipway import errors
from slipway.records import StatusRecord

MINUTE = 60.0


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def job(every: str, when: str = "", *, created: str = "2026-12-06 10:03:00") -> JobRecord:
    return cron.new_job(
        "shop",
        cron.schedule(every, when),
        "python3 tick.py",
        "standard-1x",
        actor="ann@example.com",
        now=at(created),
        minute_seconds=MINUTE,
    )


def test_schedules_take_herokus_frequencies_and_normalise_at() -> None:
    assert cron.schedule("10m") == cron.Schedule("10m", "")
    assert cron.schedule("1h") == cron.Schedule("1h", ":00")
    assert cron.schedule("1h", "30") == cron.Schedule("1h", ":30")
    assert cron.schedule("1D", "02:30") == cron.Schedule("1d", "02:30")
    assert cron.schedule("1d").describe() == "every day at 00:00 UTC"
    assert cron.schedule("1h", ":05").describe() == "every hour at :05"


@pytest.mark.parametrize(
    ("every", "when", "says"),
    [
        ("5m", "", "--every is one of 10m, 1h, 1d"),
        ("10m", ":05", "takes no --at"),
        ("1h", ":60", "minute of the hour"),
        ("1h", "2:30", "minute of the hour"),
        ("1d", "24:00", "HH:MM"),
        ("1d", "7:5", "HH:MM"),
    ],
)
def test_bad_schedules_say_what_is_allowed(every: str, when: str, says: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=says):
        cron.schedule(every, when)


@pytest.mark.parametrize("command", ["", "   ", "echo a\necho b", "x" * 5000])
def test_bad_commands_are_refused(command: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        cron.check_command(command)


def test_the_slot_in_progress_at_creation_does_not_run_the_next_one_does() -> None:
    j = job("10m", created="2026-12-06 10:03:00")
    assert cron.due_slot(j, at("2026-12-06 10:09:59"), MINUTE) is None
    assert j.next_run_at(at("2026-12-06 10:05:00"), MINUTE) == at("2026-12-06 10:10:00")
    slot = cron.due_slot(j, at("2026-12-06 10:10:00"), MINUTE)
    assert slot is not None
    assert cron.slot_start(j.schedule, slot, MINUTE) == at("2026-12-06 10:10:00")


def test_hourly_and_daily_jobs_start_at_their_minute_and_time() -> None:
    hourly = job("1h", ":30", created="2026-12-06 10:31:00")
    assert hourly.next_run_at(at("2026-12-06 10:40:00"), MINUTE) == at("2026-12-06 11:30:00")
    daily = job("1d", "02:30", created="2026-12-06 01:00:00")
    assert daily.next_run_at(at("2026-12-06 01:00:00"), MINUTE) == at("2026-12-06 02:30:00")
    later = job("1d", "02:30", created="2026-12-06 03:00:00")
    assert later.next_run_at(at("2026-12-06 03:00:00"), MINUTE) == at("2026-12-07 02:30:00")


def test_a_slot_runs_once_and_a_missed_backlog_collapses_to_the_current_slot() -> None:
    j = job("10m", created="2026-12-06 10:03:00")
    now = at("2026-12-06 10:10:01")
    slot = cron.due_slot(j, now, MINUTE)
    assert slot is not None
    j = cron.ran(j, Run(slot, at("2026-12-06 10:10:00"), now, "scheduler.1", 3))
    assert cron.due_slot(j, at("2026-12-06 10:19:59"), MINUTE) is None
    # Down from 10:20 to 10:55: one run for the 10:50 slot, not four.
    late = cron.due_slot(j, at("2026-12-06 10:55:00"), MINUTE)
    assert late == slot + 4
    j = cron.ran(j, Run(late, at("2026-12-06 10:50:00"), at("2026-12-06 10:55:00"), "s.2", 3))
    assert cron.due_slot(j, at("2026-12-06 10:59:00"), MINUTE) is None


def test_plan_runs_only_jobs_of_live_apps_whose_slot_is_due() -> None:
    due = job("10m", created="2026-12-06 10:03:00")
    not_yet = job("1h", created="2026-12-06 10:03:00")
    orphan = JobRecord(**{**due.__dict__, "id": "orphan", "app": "gone"})
    plan = cron.plan_runs([due, not_yet, orphan], {"shop"}, at("2026-12-06 10:10:00"), MINUTE)
    assert [(d.job.id, d.job.app) for d in plan] == [(due.id, "shop")]


def test_recent_runs_are_bounded_and_survive_encoding() -> None:
    j = job("10m")
    for n in range(cron.RECENT_RUNS + 5):
        j = cron.ran(j, Run(j.last_slot + 1, 0.0, 0.0, f"scheduler.{n + 1}", 1))
    back = JobRecord.decode(j.encode())
    assert back == j
    assert len(back.recent_runs) == cron.RECENT_RUNS
    assert back.last_run is not None and back.last_run.dyno == f"scheduler.{cron.RECENT_RUNS + 5}"


def test_a_scaled_minute_makes_a_ten_minute_job_run_every_few_seconds() -> None:
    sched = cron.schedule("10m")
    assert cron.slot_of(sched, 3.9, 0.4) == 0
    assert cron.slot_of(sched, 4.0, 0.4) == 1
    assert cron.run_limit("10m", 0.4) == pytest.approx(4.0)


def _placement(name: str, created: float, stop_after: float, kind: str = "oneoff") -> Placement:
    ptype = name.split(".")[0]
    return Placement(
        app="shop",
        name=name,
        type=ptype,
        release=1,
        node="n1",
        instance_id=name.replace(".", ""),
        memory_mb=512,
        max_processes=256,
        size="standard-1x",
        created_at=created,
        kind=kind,
        stop_after=stop_after,
    )


def test_scheduler_dynos_are_reaped_when_done_and_stopped_past_their_interval() -> None:
    ended = _placement("scheduler.1", 0.0, 600.0)
    running = _placement("scheduler.2", 100.0, 600.0)
    too_long = _placement("scheduler.3", 0.0, 600.0)
    plain_run = _placement("run.1", 0.0, 0.0)
    status = StatusRecord("shop", "scheduler.1", "scheduler1", "n1", "scheduler", 1, "down")
    done = finished_runs([ended, running, too_long, plain_run], {"scheduler1": status})
    assert [p.name for p in done] == ["scheduler.1"]
    late = overdue([running, too_long, plain_run], now=650.0)
    assert [p.name for p in late] == ["scheduler.3"]
