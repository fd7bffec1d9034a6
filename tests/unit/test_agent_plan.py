"""plan(desired, actual, now): tables."""

from __future__ import annotations

import pytest

from agent.model import DynoSpec, DynoState
from agent.plan import Actual, Plan, plan


def s(key: str, name: str = "web.1") -> DynoSpec:
    return DynoSpec(
        app="a", name=name, process_type=name.split(".")[0], release=1, command="x", instance_id=key
    )


def act(
    key: str,
    state: DynoState = DynoState.UP,
    *,
    active: bool = True,
    name: str = "web.1",
    **kw: object,
) -> Actual:
    return Actual(spec=s(key, name), state=state, active=active, **kw)  # type: ignore[arg-type]


NOW = 1000.0


def test_empty() -> None:
    assert plan([], {}, NOW) == Plan()
    assert plan([], {}, NOW).empty


def test_starts_missing_and_leaves_matching_alone() -> None:
    p = plan([s("k1"), s("k2", "web.2")], {"k1": act("k1")}, NOW)
    assert [x.key for x in p.start] == ["k2"]
    assert p.stop == () and p.restart == ()


def test_stops_extras_once() -> None:
    actual = {"k1": act("k1"), "k2": act("k2", stopping=True)}
    assert plan([], actual, NOW).stop == ("k1",)


def test_same_instance_with_other_spec_is_left_alone() -> None:
    changed = DynoSpec(
        app="a", name="web.1", process_type="web", release=2, command="y", instance_id="k1"
    )
    assert plan([changed], {"k1": act("k1")}, NOW).empty


def test_crashed_restarts_when_cooloff_over() -> None:
    cases = [
        # (actual, restart expected, wake_at)
        (act("k1", DynoState.CRASHED, active=False, restart_at=NOW), ("k1",), None),
        (act("k1", DynoState.CRASHED, active=False, restart_at=NOW - 5), ("k1",), None),
        (act("k1", DynoState.CRASHED, active=False, restart_at=NOW + 5), (), NOW + 5),
        (act("k1", DynoState.CRASHED, active=True, restart_at=NOW), (), None),  # already on it
        (act("k1", DynoState.CRASHED, active=False, restart_at=NOW, held=True), (), None),
        (act("k1", DynoState.CRASHED, active=False, restart_at=None), (), None),
        (act("k1", DynoState.DOWN, active=False, restart_at=NOW), (), None),
        (act("k1", DynoState.UP, active=True), (), None),
    ]
    for a, restart, wake in cases:
        p = plan([s("k1")], {"k1": a}, NOW)
        assert (p.restart, p.wake_at, p.start, p.stop) == (restart, wake, (), ()), a


@pytest.mark.parametrize("name", ["run.1", "release.4", "scheduler.7"])
def test_one_off_dynos_are_never_restarted(name: str) -> None:
    a = act("k1", DynoState.CRASHED, active=False, restart_at=NOW, name=name)
    assert plan([s("k1", name)], {"k1": a}, NOW).restart == ()


def test_wake_at_is_the_earliest_pending_restart() -> None:
    actual = {
        "k1": act("k1", DynoState.CRASHED, active=False, restart_at=NOW + 30),
        "k2": act("k2", DynoState.CRASHED, active=False, restart_at=NOW + 10, name="web.2"),
    }
    p = plan([s("k1"), s("k2", "web.2")], actual, NOW)
    assert p.wake_at == NOW + 10
    assert p.restart == ()


def test_undesired_crashed_dyno_is_stopped_not_restarted() -> None:
    a = act("k1", DynoState.CRASHED, active=False, restart_at=NOW)
    p = plan([], {"k1": a}, NOW)
    assert p.stop == ("k1",) and p.restart == ()
