from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import LocalCluster, controller_config
from tests.harness.controller import ControllerProcess


@pytest.fixture
def controller(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(etcd_endpoint, etcd_prefix, tmp_path / "controller", nats_url)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def cluster(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[LocalCluster]:
    """A real controller and no agents yet: tests add the agents they need."""
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    config = controller_config(workdir / "controller.toml")
    proc = ControllerProcess(
        etcd_endpoint,
        etcd_prefix,
        workdir / "controller",
        nats_url,
        extra_args=["--config", str(config)],
    )
    proc.start()
    local = LocalCluster(proc, workdir)
    try:
        yield local
    finally:
        local.close()
