"""Pure rules of the per-release release phase: what a pending release needs next,
how a build record shows its release's phase, and the records' compatibility."""

from __future__ import annotations

import json

import pytest

from controller.api import convert
from controller.core.models import (
    RELEASE_FAILED,
    RELEASE_PENDING,
    RELEASE_SUCCEEDED,
    AppRecord,
    ReleaseRecord,
    SlugInfo,
    initial_status,
)
from controller.loops.release_phase import CHECK, PLACE, Outcome, build_view, next_step
from controller.store.build_records import FAILED, PENDING, RUNNING, SUCCEEDED, BuildRecord
from slipway.cli.releases import new_release_text
from slipway.v1 import types_pb2


def release(version: int = 5, **kw: object) -> ReleaseRecord:
    fields: dict[str, object] = {
        "status": RELEASE_PENDING,
        "release_command": "python migrate.py",
        **kw,
    }
    return ReleaseRecord(  # type: ignore[arg-type]
        app="app",
        version=version,
        description="Set A config vars",
        created_at=1.0,
        config={"A": "1"},
        slug=SlugInfo(digest="d" * 64),
        process_types={"web": "python app.py"},
        **fields,
    )


def test_only_a_release_command_makes_a_release_wait() -> None:
    assert initial_status("python migrate.py") == RELEASE_PENDING
    assert initial_status("") == RELEASE_SUCCEEDED


@pytest.mark.parametrize(
    ("rel", "current", "expect"),
    [
        (release(), 4, PLACE),
        (release(phase_instance="i1"), 4, CHECK),
        # Already started when a newer release went live: it runs to its end.
        (release(phase_instance="i1"), 6, CHECK),
        (release(release_command=""), 4, Outcome(RELEASE_SUCCEEDED, "no release command to run")),
        (release(status=RELEASE_FAILED, error="boom"), 4, Outcome(RELEASE_FAILED, "boom")),
        (release(status=RELEASE_SUCCEEDED), 5, Outcome(RELEASE_SUCCEEDED, "")),
    ],
)
def test_next_step(rel: ReleaseRecord, current: int, expect: object) -> None:
    assert next_step(rel, current) == expect


def test_an_older_release_not_started_is_superseded_not_run() -> None:
    step = next_step(release(5), 6)
    assert isinstance(step, Outcome)
    assert step.status == RELEASE_FAILED and "superseded by v6" in step.message


def build(**kw: object) -> BuildRecord:
    fields: dict[str, object] = {"release": 5, "release_command": "python migrate.py", **kw}
    return BuildRecord(id="b-1", app="app", status=SUCCEEDED, **fields)  # type: ignore[arg-type]


def test_build_record_follows_its_release_phase() -> None:
    pending = build(release_phase=PENDING)
    assert build_view(pending, release(), 4) is None
    running = build_view(pending, release(phase_instance="i1"), 4)
    assert running is not None and running.release_phase == RUNNING
    assert running.notes == ["-----> Running release command: python migrate.py"]
    assert build_view(running, release(phase_instance="i1"), 4) is None  # idempotent

    done = build_view(running, release(phase_instance="i1", status=RELEASE_SUCCEEDED), 5)
    assert done is not None and done.release_phase == SUCCEEDED and done.finished
    assert done.notes[-1] == "       release command succeeded"
    assert build_view(done, release(status=RELEASE_FAILED, error="x"), 4) is None  # settled


def test_build_record_shows_why_its_release_failed() -> None:
    failed_rel = release(phase_instance="i1", status=RELEASE_FAILED, error="exited with status 4")
    # The record missed the running step (a leader died): both lines appear, in order.
    failed = build_view(build(release_phase=PENDING), failed_rel, 4)
    assert failed is not None and failed.release_phase == FAILED and failed.finished
    assert failed.error == "Release v5 failed: exited with status 4"
    assert failed.notes == [
        "-----> Running release command: python migrate.py",
        " !     Release v5 failed: exited with status 4; dynos stay on v4",
    ]
    never_ran = build_view(build(release_phase=PENDING), release(status=RELEASE_FAILED), 0)
    assert never_ran is not None and len(never_ran.notes) == 1
    assert "dynos stay" not in never_ran.notes[0]


def test_build_record_of_a_late_success_says_the_newer_release_stays() -> None:
    late = build_view(build(release_phase=RUNNING), release(status=RELEASE_SUCCEEDED), 6)
    assert late is not None and "v6 is newer and stays live" in late.notes[-1]


def test_build_views_ignore_other_releases_and_builds_without_a_phase() -> None:
    assert build_view(build(release_phase=PENDING, release=3), release(), 4) is None
    assert build_view(build(release_phase=""), release(status=RELEASE_FAILED), 4) is None


def test_records_written_before_the_per_release_phase_still_decode() -> None:
    old_release = json.loads(release().encode())
    for key in ("release_command", "phase_instance", "phase_started_at", "error"):
        del old_release[key]
    decoded = ReleaseRecord.decode(json.dumps(old_release).encode())
    assert decoded.release_command == "" and decoded.phase_instance == "" and not decoded.error
    old_app = json.loads(AppRecord(name="app", id="1", created_at=0).encode())
    del old_app["pending_releases"]
    assert AppRecord.decode(json.dumps(old_app).encode()).pending_releases == []


def test_api_shows_the_release_command_and_why_a_release_failed() -> None:
    msg = convert.release(release(status=RELEASE_FAILED, error="release command crashed"))
    assert msg.description == "Set A config vars: release command crashed"
    assert dict(msg.process_types) == {"web": "python app.py", "release": "python migrate.py"}
    assert msg.status == types_pb2.RELEASE_STATUS_FAILED
    plain = convert.release(release(status=RELEASE_SUCCEEDED, release_command=""))
    assert plain.description == "Set A config vars" and dict(plain.process_types) == {
        "web": "python app.py"
    }


def test_cli_says_when_a_new_release_waits_for_its_release_phase() -> None:
    pending = types_pb2.Release(version=7, status=types_pb2.RELEASE_STATUS_PENDING)
    assert new_release_text(pending) == "v7 (release phase running)"
    live = types_pb2.Release(version=7, status=types_pb2.RELEASE_STATUS_SUCCEEDED)
    assert new_release_text(live) == "v7"
