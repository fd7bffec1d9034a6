"""NATS storage full: a deploy fails at once with a clear error, nothing hangs,
and deploys work again once space returns.

The test's own nats-server has its JetStream file storage capped, as a full
disk would cap it, and is filled with objects of the test's own. Space
"returns" as it would after an operator grows the disk: the server restarts on
the same port and data with a larger cap, and the controller and builder, which
stayed up, reconnect by themselves.

(Deleting objects does not give the space back on Debian's nats-server 2.9: a
delete writes a marker, which a full store refuses, and the purged chunks stay
counted until the server restarts. The closing note of issue 19 says more.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats.js.errors
import pytest

from slipway import engines, errors, objstore
from tests.harness import secure
from tests.harness.controller import ControllerProcess
from tests.integration.test_builder_failover import BuilderProcess
from tests.integration.test_deploy_builds import FIXTURES, show, start_controller

pytestmark = pytest.mark.integration

CAP = 24 * 1024 * 1024
FILLER = 1024 * 1024


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[engines.Engine]:
    server = secure.nats_engine(tmp_path / "nats", max_store_bytes=CAP)
    server.start()
    yield server
    server.stop()


def url(server: engines.Engine) -> str:
    return f"nats://{server.host}:{server.port}"


async def fill(nats_url: str, scratch: Path) -> int:
    """Objects of 1 MB in the caches bucket until JetStream refuses the next one;
    that refusal must be the platform's own error, naming the cause."""
    nc = await secure.nats_connect([nats_url], name="filler")
    stores = objstore.ObjectStores(nc.jetstream())
    blob = scratch / "filler"
    blob.write_bytes(os.urandom(FILLER))
    try:
        for n in range(CAP // FILLER + 1):
            try:
                await stores.put_file(objstore.CACHES, f"filler-{n}", blob)
            except errors.ResourceExhausted as exc:
                assert "storage is full" in str(exc)
                assert isinstance(exc.__cause__, nats.js.errors.APIError)
                return n
        raise AssertionError("the capped store took more than its cap")
    finally:
        await nc.close()


def deploy(ctl: ControllerProcess, app: str) -> subprocess.CompletedProcess[str]:
    # A hang would show as the CLI's own timeout, failing the test.
    return ctl.cli("deploy", str(FIXTURES / "hello-app"), "-a", app, timeout=120)


def test_deploy_fails_clearly_on_full_storage_and_works_once_space_returns(
    etcd_endpoint: str, etcd_prefix: str, small_nats: engines.Engine, tmp_path: Path
) -> None:
    ctl = start_controller(etcd_endpoint, etcd_prefix, url(small_nats), tmp_path / "controller")
    builder = BuilderProcess("full-builder", url(small_nats), tmp_path / "builder")
    grown: engines.Engine | None = None
    try:
        ctl.cli("apps:create", "fullapp", check=True)
        assert asyncio.run(fill(url(small_nats), tmp_path)) > 0, "room for one filler at least"

        refused = deploy(ctl, "fullapp")
        show("deploy on a full store", refused)
        assert refused.returncode != 0
        assert "storage is full" in refused.stderr
        assert "Traceback" not in refused.stderr and "internal error" not in refused.stderr

        # Space returns: the operator grows the store; NATS restarts in place.
        small_nats.stop()
        (small_nats.data_dir / "nats.conf").write_text(
            f"jetstream {{ max_file_store: {4 * CAP} }}\n"
        )
        grown = engines.Engine(
            small_nats.name, small_nats.argv, small_nats.data_dir, small_nats.host, small_nats.port
        )
        grown.start()
        again = deploy(ctl, "fullapp")
        show("deploy once space returned", again)
        assert again.returncode == 0, again.stderr
        assert "Released v2" in again.stdout
    finally:
        ctl.stop()
        asyncio.run(builder.cleanup())
        if grown is not None:
            grown.stop()
