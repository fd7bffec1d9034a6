"""Shared fixtures: real etcd and nats-server (JetStream) on free ports in temp dirs.

One etcd and one nats-server serve the whole session; each test gets its own
etcd key prefix (``etcd_prefix``) so tests never see each other's state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import engines


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engine]:
    server = engines.etcd(tmp_path_factory.mktemp("etcd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def etcd_endpoint(etcd_server: engines.Engine) -> str:
    return f"{etcd_server.host}:{etcd_server.port}"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engine]:
    server = engines.nats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: engines.Engine) -> str:
    return f"nats://{nats_server.host}:{nats_server.port}"


@pytest.fixture
def etcd_prefix() -> str:
    return f"/slipway-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d
