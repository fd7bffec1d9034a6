"""An attached one-off dyno with nothing going in or out ends after the idle timeout.

The controller runs with `run_idle_seconds = 2` (Heroku: an hour).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import LocalCluster
from tests.harness.oneoff import deploy, kill_quietly, popen_cli, runs, start_cluster
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

APP = "idler"


@pytest.fixture
def cluster(etcd_endpoint: str, nats_url: str, tmp_path: Path) -> Iterator[LocalCluster]:
    prefix = f"/slipway-test-{uuid.uuid4().hex[:10]}"
    local = start_cluster(
        tmp_path / "idle", etcd_endpoint, prefix, nats_url, extra_config="run_idle_seconds = 2\n"
    )
    try:
        local.add_agent("node-a")
        deploy(local, APP)
        yield local
    finally:
        local.close()


def test_idle_session_ends_the_dyno(cluster: LocalCluster) -> None:
    # Output keeps a session alive; silence ends it.
    proc = popen_cli(
        cluster, "run", "-a", APP, "for i in 1 2 3 4; do echo tick; sleep 1; done; sleep 600"
    )
    try:
        code = proc.wait(90)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        assert out == b"tick\n" * 4, "output is activity: the ticks all come through"
        assert b"no input or output for 2 s" in err
        assert code != 0
        eventually(lambda: not runs(cluster, APP), timeout=60)
        eventually(
            lambda: not [c for c in cluster.agents["node-a"].containers() if ".run." in c], 60
        )
    finally:
        kill_quietly(proc)
