"""ps:restart in the scheduler's pure plan(): a restarted dyno is replaced new before old."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from controller.core.scheduler import CRASHED, STARTING, UP, Cluster, Placement, plan
from tests.unit.test_scheduler_plan import nodes, placed, want

W1 = placed("web.1", "a")
W2 = placed("web.1", "a", iid="w2")  # web.1's replacement, already placed
MARKED = replace(W1, restart_requested=True)
OTHER = placed("web.2", "a")


def ids(ps: list[Placement]) -> set[str]:
    return {p.instance_id for p in ps}


@dataclass
class Case:
    id: str
    placements: tuple[Placement, ...]
    states: dict[str, str] = field(default_factory=dict)
    web: int = 1
    capacity: int = 4096
    added: list[str] = field(default_factory=list)  # names
    removed: set[str] = field(default_factory=set)  # instance ids


CASES = [
    Case("not marked: left alone", (W1,), {W1.instance_id: UP}),
    Case(
        "marked and up: the replacement starts, the old one keeps serving",
        (MARKED,),
        {MARKED.instance_id: UP},
        added=["web.1"],
    ),
    Case(
        "replacement starting: the old one still serves",
        (MARKED, W2),
        {MARKED.instance_id: UP, W2.instance_id: STARTING},
    ),
    Case(
        "replacement up: the old one stops",
        (MARKED, W2),
        {MARKED.instance_id: UP, W2.instance_id: UP},
        removed={MARKED.instance_id},
    ),
    Case(
        "marked and crashed: swapped at once (it serves nothing)",
        (MARKED,),
        {MARKED.instance_id: CRASHED},
        added=["web.1"],
        removed={MARKED.instance_id},
    ),
    Case(
        "no room beside it: stop first, then start",
        (MARKED,),
        {MARKED.instance_id: UP},
        capacity=512,
        added=["web.1"],
        removed={MARKED.instance_id},
    ),
    Case(
        "only the marked dyno of the app restarts",
        (MARKED, OTHER),
        {MARKED.instance_id: UP, OTHER.instance_id: UP},
        web=2,
        added=["web.1"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_restart_plan(case: Case) -> None:
    cluster = Cluster(nodes("a", capacity=case.capacity), case.placements, case.states)
    result = plan([want(web=case.web)], cluster, now=10.0)
    assert sorted(p.name for p in result.add) == sorted(case.added)
    assert ids(result.remove) == case.removed
    assert not result.unplaced
    assert all(not p.restart_requested for p in result.add)


def test_the_mark_survives_encoding_and_old_records_read_unmarked() -> None:
    assert Placement.decode(MARKED.encode()).restart_requested
    old = MARKED.encode().replace(b',"restart_requested":true', b"")
    assert not Placement.decode(old).restart_requested
