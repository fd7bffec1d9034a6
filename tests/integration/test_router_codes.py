"""Each Heroku H code, produced by setting up its cause; checks status, page and
the router log line that arrives on NATS ``logs.{app}``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from router.config import RouterConfig
from slipway.engines import free_port
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import (
    BASE,
    Dyno,
    LogTap,
    Req,
    RunningRouter,
    read_response,
    request,
    router_config,
    routes,
    start_router,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@contextlib.asynccontextmanager
async def scene(
    etcd_endpoint: str,
    etcd_prefix: str,
    nats_url: str,
    *,
    app: dict[str, object] | None = None,
    dynos: list[Dyno] | None = None,
    **limits: float | int,
) -> AsyncIterator[tuple[RunningRouter, LogTap]]:
    """An app ``demo`` with ``dynos``, a router with ``limits``, and a log tap."""
    tap = await LogTap().start(nats_url, "demo")
    try:
        async with routes(etcd_endpoint, etcd_prefix) as r:
            await r.app("demo", **(app or {}))
            for dyno in dynos or []:
                await r.dyno("demo", dyno)
            config: RouterConfig = router_config(etcd_endpoint, etcd_prefix, nats_url, **limits)
            async with start_router(config, need_logs=True) as rt:
                yield rt, tap
    finally:
        await tap.stop()
        for dyno in dynos or []:
            await dyno.stop()


def held_booting(rt: RunningRouter) -> int:
    """Requests the router holds while the app's web dynos boot."""
    return rt.router.plane.counters()["held_booting"]


async def _ready(value: bool) -> bool:
    return value


def assert_page(body: bytes, code: str) -> None:
    assert body.startswith(b"<!DOCTYPE html>")
    assert code.encode() in body


@pytest.mark.parametrize(
    ("fields", "with_dyno", "code", "desc", "retry_after"),
    [
        ({"maintenance": True}, True, "H80", "Maintenance mode", "60"),
        ({"released": False, "web": 0}, False, "H81", "Blank app", None),
        ({"crashed": True}, True, "H10", "App crashed", "10"),
        ({"web": 0}, False, "H14", "No web processes running", "10"),
    ],
)
async def test_app_state_codes(
    etcd_endpoint, etcd_prefix, nats_url, fields, with_dyno, code, desc, retry_after
):
    dynos = [await Dyno().start()] if with_dyno else []
    async with scene(etcd_endpoint, etcd_prefix, nats_url, app=fields, dynos=dynos) as (rt, tap):
        res = await request(rt.port, "/state")
        assert res.status == 503
        assert_page(res.body, code)
        assert res.headers.get("retry-after") == retry_after
        line = await tap.wait_for(f"code={code}", 'path="/state"')
        assert f'desc="{desc}"' in line.message and "status=503" in line.message
        assert line.source == "heroku" and line.process == "router"
    for dyno in dynos:
        assert dyno.connections == 0


async def test_h20_when_no_web_dyno_comes_up_within_the_boot_timeout(
    etcd_endpoint, etcd_prefix, nats_url
):
    """web > 0 but no dyno up yet: held, not H14 at once; H20 when the hold runs out."""
    async with scene(etcd_endpoint, etcd_prefix, nats_url, app={"web": 2}, boot_timeout=1.0) as (
        rt,
        tap,
    ):
        res = await request(rt.port, "/boot")
        assert res.status == 503
        assert_page(res.body, "H20")
        line = await tap.wait_for("code=H20", 'path="/boot"')
        assert 'desc="App boot timeout"' in line.message and "status=503" in line.message
        assert rt.router.plane.counters()["held_booting"] == 0


async def held_request(rt: RunningRouter, path: str) -> asyncio.Task:  # type: ignore[type-arg]
    """A request sent in the background, returned once the router holds it for a boot."""
    held = asyncio.create_task(request(rt.port, path))
    await eventually_async(lambda: _ready(held_booting(rt) == 1), timeout=10)
    assert not held.done()
    return held


async def test_a_request_held_while_booting_is_served_by_the_first_dyno_up(
    etcd_endpoint, etcd_prefix, nats_url
):
    dyno = await Dyno("web.1").start()
    try:
        async with routes(etcd_endpoint, etcd_prefix) as r:
            await r.app("demo", web=1)
            config = router_config(etcd_endpoint, etcd_prefix, nats_url, boot_timeout=60.0)
            async with start_router(config) as rt:
                held = await held_request(rt, "/first")
                await r.dyno("demo", dyno)  # the dyno reports up: its route appears
                res = await asyncio.wait_for(held, 10)
                assert res.status == 200
                assert held_booting(rt) == 0
    finally:
        await dyno.stop()


async def test_a_held_request_gets_the_apps_new_state_when_it_changes(
    etcd_endpoint, etcd_prefix, nats_url
):
    """Scaled to web=0 while a request waits for a boot: H14 then, not a 75 s wait."""
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo", web=1)
        config = router_config(etcd_endpoint, etcd_prefix, nats_url, boot_timeout=60.0)
        async with start_router(config) as rt:
            held = await held_request(rt, "/scaled")
            await r.app("demo", web=0)
            res = await asyncio.wait_for(held, 10)
            assert res.status == 503
            assert_page(res.body, "H14")


async def test_success_log_line(etcd_endpoint, etcd_prefix, nats_url):
    dyno = await Dyno("web.1").start()
    async with scene(etcd_endpoint, etcd_prefix, nats_url, dynos=[dyno]) as (rt, tap):
        res = await request(rt.port, '/a"b', headers={"X-Forwarded-For": "1.2.3.4"})
        assert res.status == 200
        line = await tap.wait_for("at=info", "status=200")
        msg = line.message
        assert msg.startswith('at=info method=GET path="/a\\"b" host=demo.example.test ')
        assert 'fwd="1.2.3.4, 127.0.0.1" dyno=web.1 connect=' in msg
        assert "bytes=" in msg and msg.endswith("protocol=http")


async def test_h11_backlog_too_deep(etcd_endpoint, etcd_prefix, nats_url):
    release = asyncio.Event()

    async def hold(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        return False  # then answer normally

    dyno = await Dyno("web.1", hold).start()
    async with scene(
        etcd_endpoint,
        etcd_prefix,
        nats_url,
        dynos=[dyno],
        max_inflight_per_dyno=1,
        backlog_per_dyno=1,
    ) as (rt, tap):
        first = asyncio.create_task(request(rt.port, "/1"))
        await eventually_async(lambda: _ready(len(dyno.requests) == 1))
        second = asyncio.create_task(request(rt.port, "/2"))  # waits in the backlog
        await eventually_async(lambda: _ready(rt.router.plane.counters()["waiting"] == 1))
        res = await request(rt.port, "/3")  # 1 in flight + 1 waiting: full
        assert res.status == 503
        assert_page(res.body, "H11")
        assert res.headers["retry-after"] == "1"
        await tap.wait_for("code=H11", 'desc="Backlog too deep"', 'path="/3"')
        release.set()
        assert (await first).status == 200
        assert (await second).status == 200


async def test_h12_request_timeout(etcd_endpoint, etcd_prefix, nats_url):
    never = asyncio.Event()

    async def hang(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await never.wait()
        return True

    dyno = await Dyno("web.1", hang).start()
    async with scene(
        etcd_endpoint, etcd_prefix, nats_url, dynos=[dyno], first_byte_timeout=0.5
    ) as (rt, tap):
        res = await request(rt.port, "/slow")
        assert res.status == 503
        assert_page(res.body, "H12")
        line = await tap.wait_for("code=H12", 'desc="Request timeout"')
        assert "dyno=web.1" in line.message and "status=503" in line.message


async def test_h13_closed_without_response(etcd_endpoint, etcd_prefix, nats_url):
    async def slam(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.close()
        raise ConnectionResetError

    dyno = await Dyno("web.1", slam).start()
    async with scene(etcd_endpoint, etcd_prefix, nats_url, dynos=[dyno]) as (rt, tap):
        res = await request(rt.port, "/close")
        assert res.status == 503
        assert_page(res.body, "H13")
        await tap.wait_for("code=H13", 'desc="Connection closed without response"')


async def test_h15_idle_connection(etcd_endpoint, etcd_prefix, nats_url):
    never = asyncio.Event()

    async def stall(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst bytes")
        await writer.drain()
        await never.wait()
        return True

    dyno = await Dyno("web.1", stall).start()
    async with scene(etcd_endpoint, etcd_prefix, nats_url, dynos=[dyno], idle_timeout=0.5) as (
        rt,
        tap,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
        writer.write(f"GET /stream HTTP/1.1\r\nHost: demo.{BASE}\r\n\r\n".encode())
        # The response had started, so the router can only cut the connection.
        data = await reader.read()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"first bytes")
        writer.close()
        line = await tap.wait_for("code=H15", 'desc="Idle connection"')
        assert "status=200" in line.message


async def test_h28_client_idle(etcd_endpoint, etcd_prefix, nats_url):
    dyno = await Dyno("web.1").start()
    async with scene(etcd_endpoint, etcd_prefix, nats_url, dynos=[dyno], idle_timeout=0.5) as (
        rt,
        tap,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
        writer.write(
            f"POST /upload HTTP/1.1\r\nHost: demo.{BASE}\r\nContent-Length: 10\r\n\r\nab".encode()
        )
        res = await read_response(reader)  # the client never sends the other 8 bytes
        assert res.status == 408
        assert_page(res.body, "H28")
        writer.close()
        await tap.wait_for("code=H28", 'desc="Client Connection Idle"')


async def test_h27_client_interrupted(etcd_endpoint, etcd_prefix, nats_url):
    never = asyncio.Event()
    got = asyncio.Event()

    async def hang(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        got.set()
        await never.wait()
        return True

    dyno = await Dyno("web.1", hang).start()
    async with scene(etcd_endpoint, etcd_prefix, nats_url, dynos=[dyno]) as (rt, tap):
        _reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
        writer.write(f"GET /gone HTTP/1.1\r\nHost: demo.{BASE}\r\n\r\n".encode())
        await asyncio.wait_for(got.wait(), 5)
        writer.close()  # the client gives up before any answer
        line = await tap.wait_for("code=H27", 'path="/gone"')
        assert 'desc="Client Request Interrupted"' in line.message
        assert "status=499" in line.message


async def test_h99_every_dyno_quarantined(etcd_endpoint, etcd_prefix, nats_url):
    dead = [Dyno("web.1"), Dyno("web.2")]
    async with scene(etcd_endpoint, etcd_prefix, nats_url) as (rt, tap):
        async with routes(etcd_endpoint, etcd_prefix) as r:
            for dyno in dead:
                # nothing listens there: every connect is refused
                await r.dyno("demo", dyno.name, address=f"127.0.0.1:{free_port()}")
        await eventually_async(lambda: _ready(len(rt.router.table.dyno_list.get("demo", ())) == 2))
        res = await request(rt.port, "/q")
        assert res.status == 503
        assert_page(res.body, "H99")
        assert res.headers["retry-after"] == "5"
        await tap.wait_for("code=H99", 'desc="Platform error"')
        assert all(
            d.address in rt.router.plane.quarantined() for d in rt.router.table.dyno_list["demo"]
        )


async def test_h18_dyno_cuts_the_response(etcd_endpoint, etcd_prefix, nats_url):
    async def cut(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()
        raise ConnectionResetError

    dyno = await Dyno("web.1", cut).start()
    async with scene(etcd_endpoint, etcd_prefix, nats_url, dynos=[dyno]) as (rt, tap):
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
        writer.write(f"GET /cut HTTP/1.1\r\nHost: demo.{BASE}\r\n\r\n".encode())
        data = await reader.read()  # the router can only cut the client off too
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"only part")
        writer.close()
        line = await tap.wait_for("code=H18", 'path="/cut"')
        assert 'desc="Server Request Interrupted"' in line.message
