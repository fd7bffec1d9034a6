"""Scheduler jobs through the real CLI, two controllers and a runc agent.

A scheduler minute lasts 0.8 s here, so `--every 10m` runs every 8 s. The
leader controller is killed with SIGKILL right after a run; the other one takes
over, and every slot from the first run to the last has run exactly once: one
dyno per slot in the job's record, each with its own output line in the log.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.harness import secure
from tests.harness.cluster import LocalCluster, controller_config
from tests.harness.controller import ControllerProcess
from tests.harness.oneoff import deploy
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APP = "cronapp"
MINUTE = 0.8
PERIOD = 10 * MINUTE
SETTINGS = f"scheduler_minute_seconds = {MINUTE}\nscheduler_tick_seconds = 0.2\n"


def _controller(etcd: str, prefix: str, nats: str, workdir: Path) -> ControllerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = controller_config(workdir / "controller.toml")
    config.write_text(config.read_text() + SETTINGS)
    return ControllerProcess(etcd, prefix, workdir, nats, extra_args=["--config", str(config)])


@pytest.fixture
def two_controllers(
    etcd_endpoint: str, nats_url: str, tmp_path: Path
) -> Iterator[tuple[LocalCluster, ControllerProcess]]:
    prefix = f"/slipway-test-{uuid.uuid4().hex[:10]}"
    secure.seal([etcd_endpoint], prefix)
    first = _controller(etcd_endpoint, prefix, nats_url, tmp_path / "c1")
    first.start()
    second = _controller(etcd_endpoint, prefix, nats_url, tmp_path / "c2")
    second.token = first.token
    local = LocalCluster(first, tmp_path)
    try:
        # The first controller leads (it started alone); the second waits its turn.
        second.start()
        local.add_agent("node-a", extra_args=("--controllers", f"{first.address},{second.address}"))
        deploy(local, APP)
        yield local, second
    finally:
        local.close()
        second.stop()


def job_of(controller: ControllerProcess) -> dict[str, object]:
    (job,) = json.loads(controller.cli("scheduler:jobs", "-a", APP, "--json", check=True).stdout)
    return dict(job)


def runs_of(controller: ControllerProcess) -> list[dict[str, str]]:
    return list(job_of(controller).get("recent_runs", []))  # type: ignore[call-overload]


def output_lines(controller: ControllerProcess) -> list[str]:
    out = controller.cli("logs", "-a", APP, "--dyno", "scheduler", "-n", "1500", check=True).stdout
    return re.findall(r"app\[(scheduler\.\d+)\]: tick from \1", out)


def test_a_job_runs_once_per_slot_through_a_kill9_of_the_leader(
    two_controllers: tuple[LocalCluster, ControllerProcess],
) -> None:
    cluster, standby = two_controllers
    leader = cluster.controller
    created = leader.cli(
        "scheduler:create", "-a", APP, "--every", "10m", "--", 'echo "tick from $DYNO"'
    )
    assert created.returncode == 0, created.stderr
    assert "Created scheduler job" in created.stdout and "every 10 minutes" in created.stdout

    eventually(lambda: len(runs_of(leader)) >= 2, timeout=60, interval=0.5)
    assert leader.proc is not None
    leader.proc.kill()
    leader.proc.wait()
    before = len(runs_of(standby))

    eventually(lambda: len(runs_of(standby)) >= before + 3, timeout=90, interval=0.5)
    runs = runs_of(standby)
    dynos = [r["dyno"] for r in runs]
    assert len(set(dynos)) == len(dynos)
    due = [r["due_at"] for r in runs]
    assert len(set(due)) == len(due), f"a slot ran twice: {runs}"
    # Consecutive slots: none lost to the failover either.
    times = [datetime.fromisoformat(d.replace("Z", "+00:00")).timestamp() for d in due]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps == [PERIOD] * len(gaps), f"slots were skipped: {gaps}"

    # Each run is a real dyno whose output reached the app's log once.
    def all_logged() -> bool:
        return set(dynos) <= set(output_lines(standby))

    eventually(all_logged, timeout=60, interval=1.0)
    lines = output_lines(standby)
    full = standby.cli("logs", "-a", APP, "-n", "1500", check=True).stdout
    assert all(lines.count(d) == 1 for d in dynos), full

    listed = standby.cli("scheduler:jobs", "-a", APP, check=True).stdout
    assert "every 10 minutes" in listed and "scheduler." in listed
    job_id = str(job_of(standby)["id"])
    removed = standby.cli("scheduler:remove", job_id, "-a", APP, check=True).stdout
    assert f"Removed scheduler job {job_id}" in removed
    assert "has no scheduler jobs" in standby.cli("scheduler:jobs", "-a", APP, check=True).stdout


def test_bad_jobs_get_a_clear_error_from_the_cli(controller: ControllerProcess) -> None:
    controller.cli("apps:create", "plain", check=True)
    cases = [
        (["--every", "5m", "--", "echo"], "--every is one of 10m, 1h, 1d"),
        (["--every", "1d", "--at", "25:00", "--", "echo"], "HH:MM"),
        (["--every", "10m", "--size", "huge", "--", "echo"], "unknown dyno size"),
        (["--every", "10m", "--", "   "], "no command given"),
    ]
    for args, says in cases:
        done = controller.cli("scheduler:create", "-a", "plain", *args)
        assert done.returncode != 0 and says in done.stderr, (args, done.stderr)
    missing = controller.cli("scheduler:remove", "abcd", "-a", "plain")
    assert missing.returncode != 0 and "no scheduler job 'abcd'" in missing.stderr
    nope = controller.cli("scheduler:jobs", "-a", "no-such-app")
    assert nope.returncode != 0 and "not found" in nope.stderr
    addon = controller.cli("addons:create", "scheduler:standard", "-a", "plain")
    assert addon.returncode != 0 and "slipway scheduler:create" in addon.stderr
    helped = controller.cli("scheduler:create", "--help", check=True).stdout
    assert "--every 1d --at 02:30" in helped
