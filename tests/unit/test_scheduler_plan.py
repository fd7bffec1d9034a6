"""Table tests for the scheduler's pure plan()."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

from controller.core.scheduler import (
    UP,
    AppWant,
    Cluster,
    NodeInfo,
    Placement,
    ProcessWant,
    plan,
)

NOW = 1000.0


def new_id_factory() -> object:
    counter = itertools.count(1)
    return lambda: f"i{next(counter)}"


def want(
    app: str = "demo",
    release: int = 2,
    web: int = 0,
    worker: int = 0,
    size: str = "standard-1x",
    memory: int = 512,
) -> AppWant:
    procs = []
    if web:
        procs.append(ProcessWant("web", web, size, memory, 256))
    if worker:
        procs.append(ProcessWant("worker", worker, size, memory, 256))
    return AppWant(
        app, release, "d" * 64, {"web": "python3 s.py", "worker": "python3 w.py"}, tuple(procs)
    )


def nodes(*names: str, capacity: int = 4096, draining: tuple[str, ...] = ()) -> dict[str, NodeInfo]:
    return {n: NodeInfo(n, f"10.0.0.{i}", capacity, n in draining) for i, n in enumerate(names, 1)}


def placed(
    name: str,
    node: str,
    *,
    app: str = "demo",
    release: int = 2,
    iid: str | None = None,
    size: str = "standard-1x",
    memory: int = 512,
    kind: str = "formation",
) -> Placement:
    return Placement(
        app,
        name,
        name.split(".")[0],
        release,
        node,
        iid or f"{app}-{name}-{node}-{release}",
        memory,
        256,
        size,
        1.0,
        kind,
    )


def test_scale_up_spreads_each_type_over_nodes() -> None:
    result = plan([want(web=3, worker=2)], Cluster(nodes("a", "b"), ()), NOW, new_id_factory())  # type: ignore[arg-type]
    assert not result.remove and not result.unplaced
    per_node = Counter((p.node, p.type) for p in result.add)
    assert per_node == {
        ("a", "web"): 2,
        ("b", "web"): 1,
        ("a", "worker"): 1,
        ("b", "worker"): 1,
    } or per_node == {("a", "web"): 1, ("b", "web"): 2, ("a", "worker"): 1, ("b", "worker"): 1}
    assert sorted(p.name for p in result.add) == ["web.1", "web.2", "web.3", "worker.1", "worker.2"]
    assert all(p.release == 2 and p.command for p in result.add)


def test_converged_state_plans_nothing() -> None:
    existing = (placed("web.1", "a"), placed("web.2", "b"))
    result = plan([want(web=2)], Cluster(nodes("a", "b"), existing), NOW)
    assert result.empty and not result.unplaced


def test_scale_down_removes_highest_numbers() -> None:
    existing = (placed("web.1", "a"), placed("web.2", "b"), placed("web.3", "a"))
    result = plan([want(web=1)], Cluster(nodes("a", "b"), existing), NOW)
    assert not result.add
    assert sorted(p.name for p in result.remove) == ["web.2", "web.3"]


def test_scale_to_zero_and_app_gone_remove_everything() -> None:
    existing = (placed("web.1", "a"), placed("worker.1", "b"), placed("web.1", "a", app="gone"))
    result = plan([want(web=0, worker=0)], Cluster(nodes("a", "b"), existing), NOW)
    assert {(p.app, p.name) for p in result.remove} == {
        ("demo", "web.1"),
        ("demo", "worker.1"),
        ("gone", "web.1"),
    }


def test_nothing_runs_without_a_slug_or_a_command() -> None:
    no_slug = AppWant(
        "demo", 1, "", {"web": "x"}, (ProcessWant("web", 2, "standard-1x", 512, 256),)
    )
    no_cmd = AppWant("other", 1, "d" * 64, {}, (ProcessWant("web", 2, "standard-1x", 512, 256),))
    result = plan([no_slug, no_cmd], Cluster(nodes("a"), ()), NOW)
    assert result.empty


def test_new_release_starts_new_before_stopping_old() -> None:
    old = (placed("web.1", "a", release=1), placed("web.2", "b", release=1))
    step1 = plan([want(web=2, release=2)], Cluster(nodes("a", "b"), old), NOW, new_id_factory())  # type: ignore[arg-type]
    assert len(step1.add) == 2 and not step1.remove, "old ones keep serving until new ones are up"

    both = old + tuple(step1.add)
    states = {step1.add[0].instance_id: UP, step1.add[1].instance_id: "starting"}
    step2 = plan([want(web=2, release=2)], Cluster(nodes("a", "b"), both, states), NOW)
    assert not step2.add
    assert [p.name for p in step2.remove] == [step1.add[0].name], (
        "only the one whose successor is up"
    )


def test_resize_replaces_like_a_release() -> None:
    old = (placed("web.1", "a"),)
    result = plan([want(web=1, size="standard-2x", memory=1024)], Cluster(nodes("a"), old), NOW)
    assert len(result.add) == 1 and result.add[0].memory_mb == 1024 and not result.remove


def test_lost_node_dynos_are_replaced_elsewhere() -> None:
    existing = (
        placed("web.1", "a"),
        placed("web.2", "gone-node"),
        placed("run.1", "gone-node", kind="oneoff"),
    )
    result = plan([want(web=2)], Cluster(nodes("a", "b"), existing), NOW, new_id_factory())  # type: ignore[arg-type]
    assert {p.name for p in result.lost} == {"web.2", "run.1"}
    assert {p.name for p in result.remove} == {"web.2", "run.1"}
    assert [(p.name, p.node) for p in result.add] == [("web.2", "b")], "spread: b has no web yet"


def test_one_off_dynos_are_left_alone() -> None:
    existing = (placed("run.1", "a", kind="oneoff"),)
    result = plan([want(web=0)], Cluster(nodes("a"), existing), NOW)
    assert result.empty


def test_capacity_is_respected_and_shortfall_reported() -> None:
    result = plan(
        [want(web=5, memory=1024, size="standard-2x")],
        Cluster(nodes("a", "b", capacity=2048), ()),
        NOW,
    )
    assert len(result.add) == 4
    assert [u.name for u in result.unplaced] == ["web.5"]
    assert "1024 MB" in result.unplaced[0].reason


def test_full_node_rolls_by_stopping_first() -> None:
    old = (placed("web.1", "a", release=1),)
    result = plan([want(web=1, release=2)], Cluster(nodes("a", capacity=512), old), NOW)
    assert [p.release for p in result.remove] == [1]
    assert [p.release for p in result.add] == [2]


def test_draining_node_dynos_move_then_retire() -> None:
    existing = (placed("web.1", "a"), placed("web.2", "b"))
    cluster = Cluster(nodes("a", "b", "c", draining=("a",)), existing)
    step1 = plan([want(web=2)], cluster, NOW, new_id_factory())  # type: ignore[arg-type]
    assert [(p.name, p.node) for p in step1.add] == [("web.1", "c")]
    assert not step1.remove
    moved = existing + tuple(step1.add)
    step2 = plan([want(web=2)], Cluster(cluster.nodes, moved, {step1.add[0].instance_id: UP}), NOW)
    assert [(p.name, p.node) for p in step2.remove] == [("web.1", "a")]
    assert not step2.add


def test_duplicate_placements_keep_the_oldest() -> None:
    first = Placement("demo", "web.1", "web", 2, "a", "old", 512, 256, "standard-1x", 1.0)
    second = Placement("demo", "web.1", "web", 2, "b", "new", 512, 256, "standard-1x", 5.0)
    result = plan([want(web=1)], Cluster(nodes("a", "b"), (first, second)), NOW)
    assert [p.instance_id for p in result.remove] == ["new"]


def test_placement_round_trips() -> None:
    p = placed("web.1", "a")
    assert Placement.decode(p.encode()) == p
    assert p.index == 1


def test_a_slug_runs_only_on_nodes_of_its_stack() -> None:
    cluster = Cluster(
        {
            "old": NodeInfo("old", "10.0.0.1", 4096, stack="slipway-22"),
            "new": NodeInfo("new", "10.0.0.2", 4096, stack="slipway-24"),
            "unsaid": NodeInfo("unsaid", "10.0.0.3", 4096),  # an agent that predates stacks
        },
        (),
        {},
    )
    app = dataclasses.replace(want(web=4), stack="slipway-24")
    result = plan([app], cluster, NOW, new_id_factory())  # type: ignore[arg-type]
    assert Counter(p.node for p in result.add) == {"new": 2, "unsaid": 2}
    assert not result.unplaced


def test_a_stack_no_node_runs_leaves_the_dynos_unplaced_saying_why() -> None:
    cluster = Cluster({"n1": NodeInfo("n1", "10.0.0.1", 4096, stack="slipway-24")}, (), {})
    app = dataclasses.replace(want(web=1), stack="slipway-26")
    result = plan([app], cluster, NOW, new_id_factory())  # type: ignore[arg-type]
    assert not result.add
    assert [u.reason for u in result.unplaced] == [
        "no node runs stack slipway-26, which the slug was built for "
        "(agents choose theirs with --stack)"
    ]
