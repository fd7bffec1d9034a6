"""Deploy to a whole local cluster: real CLI, controller, builder, agent (runc), etcd, NATS.

The Python fixture is deployed with `slipway deploy`, its web dyno answers
HTTP; a later deploy whose `release:` command fails leaves the app on its
previous release, still serving; a passing one rolls the formation forward.
The deploy output shows what each release command printed, and `builds:output`
replays it while the app's log still keeps it.
"""

from __future__ import annotations

import asyncio
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.v1 import types_pb2
from tests.harness.cluster import LocalCluster
from tests.harness.wait import eventually
from tests.integration.test_builder_failover import BuilderProcess
from tests.integration.test_deploy_builds import FIXTURES, show
from tests.integration.test_logs_stream import app_lines, publish

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def cluster_builder(cluster: LocalCluster, tmp_path: Path) -> Iterator[None]:
    proc = BuilderProcess("cluster-builder", cluster.controller.nats_url, tmp_path / "builder")
    yield
    asyncio.run(proc.cleanup())


def web_body(cluster: LocalCluster, app: str, release: int) -> str:
    """GET / from the app's up web dyno on ``release`` ("" while there is none)."""
    with cluster.client() as client:
        for d in client.list_dynos(app).dynos:
            if d.type == "web" and d.state == "up" and d.release == release and d.address:
                try:
                    with urllib.request.urlopen(f"http://{d.address}/", timeout=5) as resp:
                        return str(resp.read().decode())
                except OSError:
                    return ""
    return ""


def test_deploy_serves_and_failing_release_command_keeps_previous(
    cluster: LocalCluster, cluster_builder: None, tmp_path: Path
) -> None:
    cluster.add_agent("node-1")
    ctl = cluster.controller
    ctl.cli("apps:create", "webpy", check=True)
    src = tmp_path / "python-app"
    shutil.copytree(FIXTURES / "python-app", src)

    first = ctl.cli("deploy", str(src), "-a", "webpy", timeout=240)
    show("deploy to the cluster", first)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Released v2" in first.stdout
    body = eventually(lambda: web_body(cluster, "webpy", 2), timeout=60, interval=0.5)
    assert "hello from python-app" in body

    (src / "Procfile").write_text(
        "web: python server.py\n"
        'release: python -c \'import sys; sys.stdout.write("migrating\\n"); '
        'sys.stderr.write("ERROR: marker-7 failed\\n"); sys.exit(4)\'\n'
    )
    failed = ctl.cli("deploy", str(src), "-a", "webpy", timeout=240)
    show("deploy with a failing release command", failed)
    assert failed.returncode != 0
    assert "Release v3 failed" in failed.stderr and "status 4" in failed.stderr
    # What the release command printed, between the note that starts it and the outcome
    # (each line whole: its stdout and stderr may reach the log in either order).
    for printed in ("       migrating\n", "       ERROR: marker-7 failed\n"):
        in_order(
            failed.stdout,
            "-----> Running release command: python -c",
            printed,
            " !     Release v3 failed: release command exited with status 4",
        )
    with cluster.client() as client:
        assert client.get_app("webpy").app.current_release == 2
        assert client.get_release("webpy", 3).release.status == types_pb2.RELEASE_STATUS_FAILED
        failed_build = client.list_builds("webpy", 1).builds[0].id
    assert "hello from python-app" in web_body(cluster, "webpy", 2)

    (src / "Procfile").write_text(
        "web: python server.py\nrelease: python -c 'print(\"marker-ok-4\")'\n"
    )
    passed = ctl.cli("deploy", str(src), "-a", "webpy", timeout=240)
    show("deploy with a passing release command", passed)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    in_order(passed.stdout, "       marker-ok-4", "       release command succeeded", "Released v4")
    body = eventually(lambda: web_body(cluster, "webpy", 4), timeout=60, interval=0.5)
    assert "hello from python-app" in body

    # `builds:output` replays the release command's lines while the log still has them,
    replay = ctl.cli("builds:output", failed_build, "-a", "webpy", check=True)
    in_order(replay.stdout, "       ERROR: marker-7 failed", " !     Release v3 failed")
    # and says in one line that they are gone once 1500 newer lines pushed them out.
    publish(ctl.nats_url, app_lines("webpy", [f"filler {i}" for i in range(1500)]))
    gone = eventually(
        lambda: (
            (out := ctl.cli("builds:output", failed_build, "-a", "webpy", check=True).stdout)
            and "no longer in the app's log" in out
            and out
        ),
        timeout=30,
        interval=0.5,
    )
    assert "       ERROR: marker-7 failed" not in gone
    in_order(gone, "-----> Running release command", "release.3's output", " !     Release v3")


def in_order(text: str, *parts: str) -> None:
    """Each part appears in ``text``, each after the one before."""
    at = 0
    for part in parts:
        found = text.find(part, at)
        assert found >= 0, f"{part!r} missing after offset {at} in:\n{text}"
        at = found + len(part)


@pytest.mark.parametrize(
    ("fixture", "expect"),
    [("node-app", "hello from node-app"), ("procfile-app", "hello from procfile-app")],
)
def test_fixture_apps_deploy_and_answer(
    cluster: LocalCluster, cluster_builder: None, fixture: str, expect: str
) -> None:
    cluster.add_agent("node-1")
    ctl = cluster.controller
    ctl.cli("apps:create", "fixapp", check=True)
    result = ctl.cli("deploy", str(FIXTURES / fixture), "-a", "fixapp", timeout=240)
    show(f"deploy {fixture}", result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Released v2" in result.stdout
    body = eventually(lambda: web_body(cluster, "fixapp", 2), timeout=60, interval=0.5)
    assert expect in body
