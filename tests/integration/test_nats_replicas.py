"""--nats-replicas: every stream and bucket gets N copies on a 3-server NATS cluster,
and ones made earlier with fewer copies are raised in place.

Three real nats-servers with JetStream, clustered over routes on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.js.api
import pytest
from nats.aio.client import Client as NATS

from slipway import buildproto, engines, logline, objstore
from tests.harness import secure

pytestmark = pytest.mark.integration

ALL_STREAMS = [
    logline.STREAM,
    buildproto.STREAM,
    buildproto.EVENTS_STREAM,
    *(f"OBJ_{b}" for b in objstore.BUCKETS),
]


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    cluster_ports = [engines.free_port() for _ in range(3)]
    routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
    servers = [
        secure.nats_engine(
            tmp_path_factory.mktemp(f"nats-{i}"),
            cluster_port=cluster_ports[i],
            routes=[r for j, r in enumerate(routes) if j != i],
            server_name=f"n{i}",
            cluster_name="replicas-test",
        )
        for i in range(3)
    ]
    for server in servers:
        server.start()
    try:
        yield [f"nats://{s.host}:{s.port}" for s in servers]
    finally:
        for server in servers:
            server.stop()


async def connect_when_jetstream_ready(servers: list[str]) -> NATS:
    """A clustered JetStream answers once its meta leader is elected, but can place
    three copies only once every server has joined: wait for both, by placing a
    throwaway three-copy stream."""
    nc = await secure.nats_connect(servers)
    js = nc.jetstream()
    probe = nats.js.api.StreamConfig(name="READY_PROBE", subjects=["ready.probe"], num_replicas=3)
    for _ in range(300):
        try:
            await js.add_stream(probe)
            await js.delete_stream("READY_PROBE")
            return nc
        except Exception:
            await asyncio.sleep(0.2)
    await nc.close()
    raise AssertionError("JetStream cluster never had three servers ready")


@pytest.fixture
async def cluster_nc(nats_cluster: list[str]) -> AsyncIterator[NATS]:
    nc = await connect_when_jetstream_ready(nats_cluster)
    yield nc
    js = nc.jetstream()
    for name in ALL_STREAMS:
        try:
            await js.delete_stream(name)
        except Exception:
            pass
    await nc.close()


async def replicas(nc: NATS) -> dict[str, int]:
    js = nc.jetstream()
    return {n: (await js.stream_info(n)).config.num_replicas or 1 for n in ALL_STREAMS}


async def ensure_everything(nc: NATS, n: int) -> None:
    js = nc.jetstream()
    await logline.ensure_stream(js, n)
    await buildproto.ensure_streams(js, replicas=n)
    await objstore.ObjectStores(js, replicas=n).ensure_buckets()


async def test_created_with_three_copies(cluster_nc: NATS) -> None:
    await ensure_everything(cluster_nc, 3)
    assert await replicas(cluster_nc) == {n: 3 for n in ALL_STREAMS}


async def test_fewer_copies_are_raised_and_never_lowered(cluster_nc: NATS) -> None:
    await ensure_everything(cluster_nc, 1)  # e.g. an agent or an old controller came first
    assert await replicas(cluster_nc) == {n: 1 for n in ALL_STREAMS}
    await ensure_everything(cluster_nc, 3)
    assert await replicas(cluster_nc) == {n: 3 for n in ALL_STREAMS}
    await ensure_everything(cluster_nc, 1)  # a component left at the default
    assert await replicas(cluster_nc) == {n: 3 for n in ALL_STREAMS}


async def test_logs_limits_update_keeps_replicas(cluster_nc: NATS) -> None:
    js = cluster_nc.jetstream()
    await logline.ensure_stream(js, 3)
    await logline.ensure_stream(js, 1, max_per_app=2000)
    info = await js.stream_info(logline.STREAM)
    assert info.config.max_msgs_per_subject == 2000
    assert info.config.num_replicas == 3


async def test_standalone_server_keeps_working_when_asked_for_three(tmp_path: Path) -> None:
    """A standalone server accepts the setting (it keeps the one copy it can); nothing fails."""
    server = secure.nats_engine(tmp_path / "solo")
    server.start()
    try:
        nc = await secure.nats_connect(f"nats://{server.host}:{server.port}")
        try:
            await ensure_everything(nc, 1)
            await ensure_everything(nc, 3)
            js = nc.jetstream()
            ack = await js.publish(logline.subject("demo", logline.Origin.NODE), b"{}")
            assert ack.stream == logline.STREAM
        finally:
            await nc.close()
    finally:
        server.stop()
