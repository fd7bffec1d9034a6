"""Pure rules of the controller's build handling: statuses, timeouts, buildpack lists,
the release phase verdict and node choice."""

from __future__ import annotations

import pytest

from controller.api.builds import buildpack_list
from controller.core.scheduler import NodeInfo, Placement, choose_node
from controller.loops.build_watcher import consumer_name
from controller.loops.release_phase import WAIT, judge
from controller.store.build_records import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    BuildRecord,
    apply_status,
    timed_out,
)
from slipway import buildproto, errors
from slipway.records import StatusRecord

SLUG = {"digest": "ab" * 32, "size": 100, "stack": "slipway-24"}


def status(kind: str, attempt: int = 1, **kw: object) -> buildproto.BuildStatus:
    return buildproto.BuildStatus("b-1", kind, attempt, f"builder-{attempt}", ts=100.0, **kw)  # type: ignore[arg-type]


NOW = 500.0  # the clock's reading, for statuses that carry no time of their own


def applied(record: BuildRecord, st: buildproto.BuildStatus) -> BuildRecord | None:
    return apply_status(record, st, now=NOW)


def rec(**kw: object) -> BuildRecord:
    return BuildRecord(id="b-1", app="app", created_at=50.0, **kw)  # type: ignore[arg-type]


def test_running_then_retry_counts_attempts() -> None:
    r1 = applied(rec(), status(buildproto.RUNNING))
    assert r1 is not None and (r1.status, r1.attempts, r1.started_at) == (RUNNING, 1, 100.0)
    r2 = applied(r1, status(buildproto.RUNNING, 2))
    assert r2 is not None and (r2.attempts, r2.builder, r2.started_at) == (2, "builder-2", 100.0)
    # The same status again, or an older attempt speaking late, changes nothing.
    assert applied(r2, status(buildproto.RUNNING, 2)) is None
    assert applied(r2, status(buildproto.RUNNING, 1)) is None
    assert applied(r2, status(buildproto.FAILED, 1, error="late")) is None


def test_a_status_without_its_own_time_takes_the_clocks() -> None:
    untimed = buildproto.BuildStatus("b-1", buildproto.FAILED, 1, "builder-1", ts=0.0, error="x")
    failed = applied(rec(), untimed)
    assert failed is not None and (failed.started_at, failed.finished_at) == (NOW, NOW)


def test_first_terminal_status_wins() -> None:
    done = applied(
        rec(status=RUNNING, attempts=1),
        status(
            buildproto.SUCCEEDED,
            slug=SLUG,
            process_types={"web": "run", "release": "migrate"},
            release_command="migrate",
            buildpacks=["python"],
        ),
    )
    assert done is not None and done.status == SUCCEEDED
    assert done.process_types == {"web": "run"}  # release is a phase, not a process type
    assert done.release_command == "migrate" and done.buildpacks == ["python"]
    assert done.slug_digest == SLUG["digest"]
    assert applied(done, status(buildproto.SUCCEEDED, slug=SLUG)) is None
    assert applied(done, status(buildproto.FAILED, 2)) is None


def test_failure_and_success_without_slug() -> None:
    failed = applied(rec(), status(buildproto.FAILED, error="No buildpack detected"))
    assert failed is not None and (failed.status, failed.error) == (FAILED, "No buildpack detected")
    assert failed.finished
    odd = applied(rec(), status(buildproto.SUCCEEDED))
    assert odd is not None and odd.status == FAILED and "without a slug" in odd.error


def test_finished_needs_release_and_release_phase() -> None:
    assert not rec(status=SUCCEEDED).finished
    assert rec(status=SUCCEEDED, release=2).finished
    r = rec(status=SUCCEEDED, release=2, release_command="m", release_phase="running")
    assert not r.finished
    r.release_phase = FAILED
    assert r.finished


def test_record_round_trip_ignores_unknown_fields() -> None:
    r = rec(notes=["-----> hi"], slug=SLUG)
    raw = r.encode().replace(b"{", b'{"future":1,', 1)
    assert BuildRecord.decode(raw) == r


@pytest.mark.parametrize(
    ("record", "now", "expect"),
    [
        (rec(status=RUNNING, started_at=100.0), 150.0, None),
        (rec(status=RUNNING, started_at=100.0), 1200.0, "longer than 1000 s"),
        (rec(status=PENDING), 1000.0, None),
        (rec(status=PENDING), 5000.0, "no builder took"),
        (rec(status=SUCCEEDED), 99999.0, None),
    ],
)
def test_timed_out(record: BuildRecord, now: float, expect: str | None) -> None:
    why = timed_out(record, now, 1000.0, 3600.0)
    assert (why is None) if expect is None else (why is not None and expect in why)


def test_buildpack_list_semantics() -> None:
    assert buildpack_list([], "set", ["python"], 0) == ["python"]
    assert buildpack_list(["a", "b"], "set", ["c"], 2) == ["a", "c"]
    assert buildpack_list(["a"], "add", ["b"], 0) == ["a", "b"]
    assert buildpack_list(["a"], "add", ["b"], 1) == ["b", "a"]
    assert buildpack_list(["a", "b"], "remove", ["a"], 0) == ["b"]
    assert buildpack_list(["a", "b"], "clear", [], 0) == []
    with pytest.raises(errors.AlreadyExists):
        buildpack_list(["a"], "add", ["a"], 0)
    with pytest.raises(errors.InvalidArgument):
        buildpack_list(["a"], "remove", ["z"], 0)
    with pytest.raises(errors.InvalidArgument):
        buildpack_list([], "set", ["has space"], 0)
    with pytest.raises(errors.InvalidArgument):
        buildpack_list(["a"], "set", ["b"], 5)
    with pytest.raises(errors.InvalidArgument):
        buildpack_list([], "add", [], 0)


def _status(state: str, exit_status: int = -1, reason: str = "") -> StatusRecord:
    return StatusRecord(
        "app", "release.2", "i1", "n1", "release", 2, state, exit_status=exit_status, reason=reason
    )


def test_release_phase_verdict() -> None:
    live = {"placement_exists": True, "node_alive": True, "elapsed": 1.0, "timeout": 60.0}
    assert judge(None, **live) == WAIT  # type: ignore[arg-type]
    assert judge(_status("starting"), **live) == WAIT  # type: ignore[arg-type]
    assert judge(_status("down", 0), **live).status == SUCCEEDED  # type: ignore[arg-type]
    bad = judge(_status("down", 3), **live)  # type: ignore[arg-type]
    assert bad.status == FAILED and "status 3" in bad.message
    crashed = judge(_status("crashed", reason="R15"), **live)  # type: ignore[arg-type]
    assert crashed.status == FAILED and "R15" in crashed.message
    lost = judge(None, placement_exists=True, node_alive=False, elapsed=1, timeout=60)
    assert lost.status == FAILED and "lost" in lost.message
    gone = judge(None, placement_exists=False, node_alive=True, elapsed=1, timeout=60)
    assert gone.status == FAILED
    slow = judge(_status("up"), placement_exists=True, node_alive=True, elapsed=61, timeout=60)
    assert slow.status == FAILED and "longer than 60 s" in slow.message


def test_choose_node_uses_free_memory_and_skips_draining() -> None:
    nodes = [NodeInfo("a", "10.0.0.1", 1024), NodeInfo("b", "10.0.0.2", 1024, draining=True)]
    busy = Placement("x", "web.1", "web", 1, "a", "i1", 768, 256, "standard-1x", 0.0)
    assert choose_node(nodes, [], "app", "release", 512) == "a"
    assert choose_node(nodes, [busy], "app", "release", 512) is None
    nodes.append(NodeInfo("c", "10.0.0.3", 2048))
    assert choose_node(nodes, [busy], "app", "release", 512) == "c"


def test_consumer_name_is_per_installation() -> None:
    assert consumer_name("/slipway") == consumer_name("/slipway")
    assert consumer_name("/slipway") != consumer_name("/other")
    assert all(c.isalnum() or c == "-" for c in consumer_name("/a/b c"))
