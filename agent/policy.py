"""Pure decisions of the dyno lifecycle: restart cool-offs and memory verdicts.

No I/O and no clock reads: time comes in as arguments, so the tables in
tests/unit/test_agent_policy.py pin the behaviour down.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.config import RestartSchedule


def cooloff(crashes: int, schedule: RestartSchedule) -> float:
    """Seconds to wait before restarting after the ``crashes``-th crash in a row.

    ``crashes`` counts from 1: the first crash restarts at once.
    """
    if crashes <= schedule.immediate:
        return 0.0
    step = crashes - schedule.immediate - 1
    return float(min(schedule.cap, schedule.initial * (schedule.factor**step)))


@dataclass(frozen=True)
class RestartDecision:
    crashes: int  # crashes in a row, including this one
    restart_at: float  # absolute time of the restart


def on_exit(
    *,
    crashes_before: int,
    started_at: float,
    exited_at: float,
    schedule: RestartSchedule,
) -> RestartDecision:
    """What to do when a dyno that should be running has exited.

    A run that lasted ``reset_after`` seconds counts as a success: the crash
    count starts again, so a dyno that crashes once a day always restarts at
    once.
    """
    ran_for = exited_at - started_at
    crashes = 1 if ran_for >= schedule.reset_after else crashes_before + 1
    return RestartDecision(crashes=crashes, restart_at=exited_at + cooloff(crashes, schedule))


class MemoryVerdict(enum.Enum):
    OK = "ok"
    R14 = "R14"  # over quota: log, keep running
    R15 = "R15"  # over twice the quota: kill


def memory_verdict(usage_bytes: int, quota_bytes: int, hard_factor: float = 2.0) -> MemoryVerdict:
    if quota_bytes <= 0:
        return MemoryVerdict.OK
    if usage_bytes > quota_bytes * hard_factor:
        return MemoryVerdict.R15
    if usage_bytes > quota_bytes:
        return MemoryVerdict.R14
    return MemoryVerdict.OK


def should_log_r14(last_logged: float | None, now: float, interval: float) -> bool:
    return last_logged is None or now - last_logged >= interval
