"""Daily dyno cycling in the scheduler's pure plan(): deadlines, which dynos are due, tables."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from controller.config import ControllerConfig
from controller.core.scheduler import CRASHED, UP, Cluster, Placement, cycle_deadline, plan
from slipway import errors
from tests.unit.test_scheduler_plan import nodes, placed, want

PERIOD = 100.0  # deadlines fall in [100, 115) after created_at


def at(name: str, created: float, **kw: object) -> Placement:
    return replace(placed(name, "a", **kw), created_at=created)  # type: ignore[arg-type]


def test_deadline_is_the_period_plus_a_jitter_of_up_to_216_minutes_a_day() -> None:
    day = 24 * 3600.0
    deadlines = [cycle_deadline(at("web.1", 5.0, iid=f"id{i}"), day) - 5.0 for i in range(300)]
    assert all(day <= d < day + 216 * 60 for d in deadlines)
    # Spread over the whole window (so an app's dynos placed together cycle apart).
    assert min(deadlines) < day + 20 * 60 and max(deadlines) > day + 196 * 60
    assert len(set(deadlines)) == len(deadlines)


def test_deadline_depends_only_on_the_placement() -> None:
    """Every controller, a new leader too, computes the same deadline: nothing is stored."""
    p = at("web.1", 7.0, iid="abc123")
    assert cycle_deadline(p, PERIOD) == cycle_deadline(Placement.decode(p.encode()), PERIOD)
    assert cycle_deadline(p, PERIOD) != cycle_deadline(replace(p, instance_id="abc124"), PERIOD)
    assert cycle_deadline(replace(p, created_at=8.0), PERIOD) == cycle_deadline(p, PERIOD) + 1


def earliest(*ps: Placement) -> str:
    return min(ps, key=lambda p: cycle_deadline(p, PERIOD)).instance_id


W1, W2, K1 = at("web.1", 0.0), at("web.2", 0.0), at("worker.1", 0.0)
OTHER = at("web.1", 0.0, app="other")
# A cycle in flight: the old web.1 and its replacement, placed at 150.
NEW_W1 = at("web.1", 150.0, iid="new-web-1")
V1_W1 = at("web.1", 0.0, release=1)  # a deploy in flight: v1's web.1 beside v2's
V2_W1 = at("web.1", 150.0, iid="v2-web-1")


@dataclass
class Case:
    id: str
    placements: tuple[Placement, ...]
    now: float
    states: dict[str, str] = field(default_factory=dict)
    period: float = PERIOD
    web: int = 2
    worker: int = 1
    other_app: bool = False
    cycled: set[str] = field(default_factory=set)  # instance ids
    added: list[str] = field(default_factory=list)  # names
    removed: set[str] = field(default_factory=set)  # instance ids


CASES = [
    Case("not due yet", (W1,), 99.0, {W1.instance_id: UP}),
    Case(
        "due and up: the replacement starts, the old one keeps serving",
        (W1,),
        200.0,
        {W1.instance_id: UP},
        cycled={W1.instance_id},
        added=["web.1"],
    ),
    Case(
        "due and crashed: swapped at once",
        (W1,),
        200.0,
        {W1.instance_id: CRASHED},
        cycled={W1.instance_id},
        added=["web.1"],
        removed={W1.instance_id},
    ),
    Case("disabled with period 0", (W1, K1), 1e9, {W1.instance_id: UP}, period=0.0),
    Case(
        "one-off dynos never",
        (
            at("run.1", 0.0, kind="oneoff"),
            at("release.3", 0.0, kind="oneoff"),
            at("run.2", 0.0, kind="attached"),
        ),
        1e9,
        web=0,
        worker=0,
    ),
    Case(
        "one dyno of an app at a time: the earliest deadline first",
        (W1, W2, K1),
        200.0,
        {W1.instance_id: UP, W2.instance_id: UP, K1.instance_id: UP},
        cycled={earliest(W1, W2, K1)},
        added=[next(p.name for p in (W1, W2, K1) if p.instance_id == earliest(W1, W2, K1))],
    ),
    Case(
        "apps cycle independently",
        (W1, OTHER),
        200.0,
        {W1.instance_id: UP, OTHER.instance_id: UP},
        other_app=True,
        cycled={W1.instance_id, OTHER.instance_id},
        added=["web.1", "web.1"],
    ),
    Case(
        "in flight, replacement starting: both kept, no other cycle of the app starts",
        (W1, NEW_W1, W2),
        200.0,
        {W1.instance_id: UP, W2.instance_id: UP},
    ),
    Case(
        "in flight, replacement up: the old one retires, the next cycle waits a pass",
        (W1, NEW_W1, W2),
        200.0,
        {W1.instance_id: UP, NEW_W1.instance_id: UP, W2.instance_id: UP},
        removed={W1.instance_id},
    ),
    Case(
        "in flight, the old one crashed: it goes at once",
        (W1, NEW_W1),
        200.0,
        {W1.instance_id: CRASHED},
        removed={W1.instance_id},
    ),
    Case(
        "a deploy in flight: no cycle starts for the app",
        (V1_W1, V2_W1, W2),
        200.0,
        {V1_W1.instance_id: UP, W2.instance_id: UP},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cycling(case: Case) -> None:
    desired = [want(web=case.web, worker=case.worker)]
    if case.other_app:
        desired.append(want(app="other", web=1))
    cluster = Cluster(nodes("a", "b"), case.placements, case.states)
    result = plan(desired, cluster, case.now, cycle_seconds=case.period)
    assert {p.instance_id for p in result.cycled} == case.cycled
    # Formation names with no placement in the case are added too (not cycles).
    wanted = {f"web.{i}" for i in range(1, case.web + 1)}
    wanted |= {f"worker.{i}" for i in range(1, case.worker + 1)}
    missing = wanted - {p.name for p in case.placements if p.app == "demo"}
    assert sorted(p.name for p in result.add) == sorted(case.added + sorted(missing))
    assert {p.instance_id for p in result.remove} == case.removed
    assert not result.unplaced


def test_a_cycle_runs_to_the_end_and_the_next_one_starts() -> None:
    """The passes of a leader: replacement, retirement, then the app's next due dyno."""
    desired = [want(web=2)]
    cluster = Cluster(nodes("a", "b"), (W1, W2), {W1.instance_id: UP, W2.instance_id: UP})
    first = plan(desired, cluster, 200.0, cycle_seconds=PERIOD)
    (fresh,) = first.add
    assert not first.remove and [p.instance_id for p in first.cycled] == [earliest(W1, W2)]

    states = {**cluster.states, fresh.instance_id: UP}
    both = Cluster(cluster.nodes, (W1, W2, fresh), states)
    second = plan(desired, both, 201.0, cycle_seconds=PERIOD)
    assert not second.add and not second.cycled
    assert [p.instance_id for p in second.remove] == [earliest(W1, W2)]

    rest = tuple(p for p in (W1, W2, fresh) if p.instance_id != earliest(W1, W2))
    third = plan(desired, Cluster(cluster.nodes, rest, states), 202.0, cycle_seconds=PERIOD)
    assert [p.name for p in third.cycled] == [p.name for p in third.add]
    assert third.cycled[0].instance_id != fresh.instance_id, "the fresh dyno is not due"


def test_full_node_cycles_by_stopping_first() -> None:
    result = plan(
        [want(web=1)],
        Cluster(nodes("a", capacity=512), (W1,), {W1.instance_id: UP}),
        200.0,
        cycle_seconds=PERIOD,
    )
    assert [p.instance_id for p in result.remove] == [W1.instance_id]
    assert [p.name for p in result.add] == ["web.1"] and result.cycled == [W1]


def test_cycle_hours_config() -> None:
    assert ControllerConfig.build({}).dyno_cycle_hours == 24.0
    assert ControllerConfig.build({"dyno_cycle_hours": 0}).dyno_cycle_hours == 0.0
    assert ControllerConfig.build({"dyno_cycle_hours": 0.001}).dyno_cycle_hours == 0.001
    with pytest.raises(errors.InvalidArgument, match="dyno_cycle_hours"):
        ControllerConfig.build({"dyno_cycle_hours": -1})
