"""Deploy to a whole local cluster: real CLI, controller, builder, agent (runc), etcd, NATS.

The Python fixture is deployed with `slipway deploy`, its web dyno answers
HTTP; a later deploy whose `release:` command fails leaves the app on its
previous release, still serving; a passing one rolls the formation forward.
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
        "release: python -c 'import sys; print(\"migrating\"); sys.exit(4)'\n"
    )
    failed = ctl.cli("deploy", str(src), "-a", "webpy", timeout=240)
    show("deploy with a failing release command", failed)
    assert failed.returncode != 0
    assert "Release v3 failed" in failed.stderr and "status 4" in failed.stderr
    with cluster.client() as client:
        assert client.get_app("webpy").app.current_release == 2
        assert client.get_release("webpy", 3).release.status == types_pb2.RELEASE_STATUS_FAILED
    assert "hello from python-app" in web_body(cluster, "webpy", 2)

    (src / "Procfile").write_text("web: python server.py\nrelease: python -c 'print(1)'\n")
    passed = ctl.cli("deploy", str(src), "-a", "webpy", timeout=240)
    show("deploy with a passing release command", passed)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Released v4" in passed.stdout
    body = eventually(lambda: web_body(cluster, "webpy", 4), timeout=60, interval=0.5)
    assert "hello from python-app" in body


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
