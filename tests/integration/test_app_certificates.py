"""Per-app HTTPS certificates made by the leader from the cluster CA, seen in
etcd where the routers read them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import certs, pki
from slipway.keys import Keys
from tests.harness import secure
from tests.harness.controller import ControllerProcess
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def minting(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(
        etcd_endpoint,
        etcd_prefix,
        tmp_path / "controller",
        nats_url,
        extra_args=["--app-certificates-from-ca"],
    )
    proc.start()
    yield proc
    proc.stop()


def test_each_app_gets_a_certificate_for_its_host_and_loses_it_when_destroyed(
    minting: ControllerProcess, etcd_endpoint: str, etcd_prefix: str
) -> None:
    keys = Keys(etcd_prefix)
    sealer = pki.load_ca(secure.session().ca_dir).sealer()

    def record(host: str) -> certs.Pair | None:
        async def read() -> certs.Pair | None:
            async with secure.root_etcd([etcd_endpoint]) as etcd:
                kv = await etcd.get(keys.route_cert(host))
            return certs.decode(kv.value, sealer) if kv is not None else None

        return asyncio.run(read())

    minting.cli("apps:create", "demo", check=True)
    assert eventually(lambda: record("demo.localhost") is not None, 20)
    pair = record("demo.localhost")
    assert pair is not None and pair.made_here
    leaf = certs.check(pair.chain, pair.key)
    assert pki.dns_names(leaf) == ["demo.localhost"]
    minting.cli("apps:destroy", "-a", "demo", "--confirm", "demo", check=True)
    assert eventually(lambda: record("demo.localhost") is None, 20)
