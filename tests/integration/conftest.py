from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controller import ControllerProcess


@pytest.fixture
def controller(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(etcd_endpoint, etcd_prefix, tmp_path / "controller", nats_url)
    proc.start()
    yield proc
    proc.stop()
