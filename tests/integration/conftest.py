from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import uvloop

from tests.harness.cluster import LocalCluster, controller_config
from tests.harness.controller import ControllerProcess


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Router tests run on uvloop, as the router does in production; the rest on
    the standard loop."""
    if item.path.name.startswith("test_router_"):
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


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
