"""A dyno's size sets its CPU weight: a real controller places a standard-2x
worker on a real agent, and the running runc container's cgroup says 2048."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.metrics import cgroup_root
from agent.sandbox import cgroups_path
from tests.harness.cluster import LocalCluster
from tests.harness.wait import eventually
from tests.integration.test_cluster_dynos import deploy, dynos

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CPU_ROOT = cgroup_root("cpu")


def cpu_shares(root: Path, prefix: str, cid: str) -> int | None:
    try:
        return int((root / cgroups_path(prefix, cid).lstrip("/") / "cpu.shares").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(CPU_ROOT is None, reason="no cgroup v1 cpu controller mounted on this host")
def test_standard_2x_dyno_runs_with_2048_cpu_shares(cluster: LocalCluster) -> None:
    assert CPU_ROOT is not None
    agent = cluster.add_agent("node-a")
    cli = cluster.controller.cli
    cli("apps:create", "cpushares", check=True)
    deploy(cluster, "cpushares")  # the first release scales web to 1 (standard-1x)
    cli("ps:scale", "-a", "cpushares", "worker=1:standard-2x", check=True)

    eventually(
        lambda: (
            {d["name"] for d in dynos(cluster, "cpushares") if d["state"] == "up"}
            == {"web.1", "worker.1"}
        ),
        60,
    )
    sizes = {d["name"]: d["size"] for d in dynos(cluster, "cpushares")}
    assert sizes == {"web.1": "standard-1x", "worker.1": "standard-2x"}
    shares = {
        name: cpu_shares(CPU_ROOT, agent.container_prefix, cid)
        for cid in agent.containers()
        for name in ("web.1", "worker.1")
        if f".{name}." in cid
    }
    assert shares == {"web.1": 1024, "worker.1": 2048}
