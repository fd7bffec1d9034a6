"""Operating the router: metrics endpoint, NATS outage, several workers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from router.config import Listen, LogConfig
from slipway import engines, pki
from tests.harness import secure
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import (
    BASE,
    Dyno,
    Req,
    demo_router,
    read_response,
    request,
    router_config,
    routes,
    start_router,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def http_get(port: int, path: str = "/metrics") -> str:
    """The whole answer; "" when nothing listens there (yet)."""
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
    except OSError:
        return ""
    return data.decode()


async def test_metrics_endpoint_counts_requests_and_codes(etcd_endpoint, etcd_prefix):
    dyno = await Dyno().start()
    config = replace(
        router_config(etcd_endpoint, etcd_prefix), metrics_listen=Listen("127.0.0.1", 0)
    )
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        await r.app("down", maintenance=True)
        async with start_router(config) as rt:
            for _ in range(3):
                assert (await request(rt.port)).status == 200
            assert (await request(rt.port, app="down")).status == 503
            assert rt.router.metrics_server is not None
            await rt.router.metrics_server.listening.wait()
            text = await http_get(rt.router.metrics_server.port)
            assert text.startswith("HTTP/1.1 200")
            assert 'slipway_router_requests_total{status="200",code=""} 3' in text
            assert 'slipway_router_requests_total{status="503",code="H80"} 1' in text
            assert "slipway_router_route_apps 2" in text
            assert "slipway_router_quarantines_total 0" in text
            assert "slipway_router_connections_active" in text
            # When the router's own certificate runs out (a year from the test CA's issue).
            assert config.credentials is not None
            expiry = int(config.credentials.identity().not_after.timestamp())
            assert f"slipway_router_certificate_expiry_timestamp_seconds {expiry}\n" in text
    await dyno.stop()


async def test_nats_down_lines_dropped_and_counted_requests_carry_on(etcd_endpoint, etcd_prefix):
    dyno = await Dyno().start()
    nowhere = f"nats://127.0.0.1:{engines.free_port()}"  # nothing listens
    config = router_config(etcd_endpoint, etcd_prefix)
    config = replace(config, logs=LogConfig(servers=(nowhere,), queue_size=5))
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(config) as rt:
            for _ in range(20):
                assert (await request(rt.port)).status == 200
            shipper = rt.router.shipper
            assert not shipper.connected
            # The newest 5 wait for NATS to come back.
            await eventually_async(lambda: _true(shipper.dropped == 15), timeout=10)
            assert shipper.published == 0
    await dyno.stop()


@pytest.fixture
def two_threads(etcd_endpoint: str, etcd_prefix: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    port = engines.free_port()
    metrics = engines.free_port()
    log = open(tmp_path / "router.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router",
            "--workers",
            "2",
            "--listen",
            f"127.0.0.1:{port}",
            "--etcd",
            etcd_endpoint,
            "--etcd-prefix",
            etcd_prefix,
            "--base-domain",
            BASE,
            "--metrics-listen",
            f"127.0.0.1:{metrics}",
            *secure.flags(pki.Role.ROUTER),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        engines.wait_for_port("127.0.0.1", port, 15, proc)
        yield proc, port, metrics
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
    assert proc.returncode == 0  # stopped cleanly on SIGTERM


async def test_the_router_command_with_two_data_plane_threads(
    etcd_endpoint, etcd_prefix, two_threads
):
    _proc, port, metrics = two_threads
    dyno = await Dyno().start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)

    async def served_and_counted() -> bool:
        # Ten at once, so both threads have connections to take.
        answers = await asyncio.gather(*(request(port) for _ in range(10)))
        text = await http_get(metrics)
        return all(a.status == 200 for a in answers) and (
            'slipway_router_requests_total{status="200",code=""}' in text
            and "slipway_router_dataplane_threads 2" in text
        )

    try:
        await eventually_async(served_and_counted, timeout=20)
    finally:
        await dyno.stop()


async def _true(value: bool) -> bool:
    return value


async def test_stop_finishes_the_request_under_way_and_closes_idle_connections(
    etcd_endpoint, etcd_prefix
):
    release = asyncio.Event()

    async def slow(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if req.path != "/slow":
            return False
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        return True

    dyno = await Dyno("web.1", slow).start()
    async with demo_router(etcd_endpoint, etcd_prefix, dyno) as rt:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", rt.port)
        idle_writer.write(f"GET / HTTP/1.1\r\nHost: demo.{BASE}\r\n\r\n".encode())
        assert (await read_response(idle_reader)).status == 200  # now idle, kept alive
        busy = asyncio.create_task(request(rt.port, "/slow"))
        await eventually_async(lambda: _true(len(dyno.requests) == 2), timeout=10)
        rt.router.stop()
        # The idle connection is closed by the router; new ones are refused.
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        await eventually_async(lambda: _refused(rt.port), timeout=10)
        assert not busy.done()
        release.set()
        res = await asyncio.wait_for(busy, 10)
        assert res.status == 200 and res.body == b"done"
        await asyncio.wait_for(rt.task, 10)  # the router returns once it is done
        idle_writer.close()
    await dyno.stop()


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False
