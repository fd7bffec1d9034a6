"""A real router whose table comes from a sealed TLS etcd, with its router bundle,
serving a route a node's presence wrote there with its node bundle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from agent.model import DynoState, DynoStatus
from agent.presence import Presence
from slipway import etcdauth, pki
from slipway.keys import Keys
from slipway.records import NodeRecord
from tests.harness.etcd_tls import SealedEtcd, sealed_etcd
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import Dyno, Routes, request, router_config, start_router

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SealedEtcd]:
    with sealed_etcd(tmp_path_factory.mktemp("etcd-tls")) as etcd:
        yield etcd


async def test_router_serves_a_nodes_route_from_a_sealed_etcd(sealed: SealedEtcd) -> None:
    keys = Keys(sealed.prefix)
    dyno = await Dyno("web.1").start()
    async with sealed.client(pki.Role.CONTROLLER) as controller:
        await etcdauth.ensure_node(controller, sealed.prefix, "n5")
        await Routes(controller, keys).app("demo")
        status = DynoStatus(
            app="demo",
            name="web.1",
            instance_id="r1",
            process_type="web",
            release=1,
            state=DynoState.UP,
            port=dyno.port,
            changed_at=time.time(),
        )
        record = NodeRecord(name="n5", address="127.0.0.1", capacity_mb=512)
        async with sealed.client(pki.Role.NODE, "n5") as n5:
            presence = Presence(n5, keys, record, lambda: [status], ttl=5, interval=0.05)
            task = asyncio.create_task(presence.run())
            try:
                await asyncio.wait_for(presence.registered.wait(), 10)
                config = replace(
                    router_config(sealed.endpoint, sealed.prefix),
                    credentials=sealed.pki.bundle(pki.Role.ROUTER),
                )
                async with start_router(config) as rt:

                    async def served() -> bool:
                        res = await request(rt.port, "/")
                        return res.status == 200 and res.body == b"hello from web.1"

                    await eventually_async(served)
                    assert rt.router.watcher.connected
            finally:
                task.cancel()
    await dyno.stop()
