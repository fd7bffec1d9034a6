"""Restart cool-offs and memory verdicts: pure tables."""

from __future__ import annotations

import pytest

from agent.config import RestartSchedule
from agent.policy import MemoryVerdict, cooloff, memory_verdict, on_exit, should_log_r14

CF = RestartSchedule(immediate=3, initial=30.0, factor=2.0, cap=960.0, reset_after=600.0)


@pytest.mark.parametrize(
    ("crashes", "wait"),
    [
        (1, 0.0),
        (2, 0.0),
        (3, 0.0),
        (4, 30.0),
        (5, 60.0),
        (6, 120.0),
        (7, 240.0),
        (8, 480.0),
        (9, 960.0),
        (10, 960.0),
        (50, 960.0),
    ],
)
def test_cloud_foundry_shaped_default(crashes: int, wait: float) -> None:
    assert cooloff(crashes, CF) == wait


def test_default_schedule_is_the_cloud_foundry_shape() -> None:
    default = RestartSchedule()
    assert [cooloff(n, default) for n in range(1, 11)] == [0, 0, 0, 30, 60, 120, 240, 480, 960, 960]


@pytest.mark.parametrize(
    ("crashes_before", "ran_for", "crashes", "wait"),
    [
        (0, 1.0, 1, 0.0),  # first crash: restart at once
        (3, 1.0, 4, 30.0),  # fourth in a row: first cool-off
        (8, 5.0, 9, 960.0),  # capped
        (8, 600.0, 1, 0.0),  # a run of reset_after counts as success: start over
        (8, 599.9, 9, 960.0),
    ],
)
def test_on_exit(crashes_before: int, ran_for: float, crashes: int, wait: float) -> None:
    d = on_exit(
        crashes_before=crashes_before, started_at=1000.0, exited_at=1000.0 + ran_for, schedule=CF
    )
    assert d.crashes == crashes
    assert d.restart_at == pytest.approx(1000.0 + ran_for + wait)


MB = 1024 * 1024


@pytest.mark.parametrize(
    ("usage", "quota", "verdict"),
    [
        (100 * MB, 512 * MB, MemoryVerdict.OK),
        (512 * MB, 512 * MB, MemoryVerdict.OK),
        (513 * MB, 512 * MB, MemoryVerdict.R14),
        (1024 * MB, 512 * MB, MemoryVerdict.R14),
        (1025 * MB, 512 * MB, MemoryVerdict.R15),
        (5 * MB, 0, MemoryVerdict.OK),
    ],
)
def test_memory_verdict(usage: int, quota: int, verdict: MemoryVerdict) -> None:
    assert memory_verdict(usage, quota, 2.0) is verdict


@pytest.mark.parametrize(
    ("last", "now", "expected"), [(None, 5.0, True), (0.0, 19.9, False), (0.0, 20.0, True)]
)
def test_r14_rate_limit(last: float | None, now: float, expected: bool) -> None:
    assert should_log_r14(last, now, 20.0) is expected
