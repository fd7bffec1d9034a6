"""Shared fixtures: real etcd and nats-server (JetStream) on free ports in temp dirs.

One etcd and one nats-server serve the whole session, both on TLS with
certificates of the session's cluster CA (``tests/harness/secure.py``) and etcd
sealed (RBAC on); each test gets its own etcd key prefix (``etcd_prefix``),
sealed for it, so tests never see each other's state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import engines
from tests.harness import secure
from tests.harness.pki import ClusterPKI


@pytest.fixture(scope="session", autouse=True)
def cluster_pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    return secure.install(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engine]:
    server = secure.etcd_engine(tmp_path_factory.mktemp("etcd"))
    server.start()
    # Auth on from the first test, so a test run alone meets etcd as it is in a
    # whole run: a prefix nobody sealed gives routers and nodes nothing.
    secure.seal([f"{server.host}:{server.port}"], "/slipway-test-session")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def etcd_endpoint(etcd_server: engines.Engine) -> str:
    return f"{etcd_server.host}:{etcd_server.port}"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engine]:
    server = secure.nats_engine(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: engines.Engine) -> str:
    return f"nats://{nats_server.host}:{nats_server.port}"


@pytest.fixture
def etcd_prefix(etcd_endpoint: str) -> str:
    prefix = f"/slipway-test-{uuid.uuid4().hex[:10]}"
    secure.seal([etcd_endpoint], prefix)
    return prefix


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d
