"""HTTP behaviour through a real router, real etcd and real sockets."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from tests.integration.test_router_harness import (
    BASE,
    Dyno,
    Req,
    demo_router,
    frame,
    raw,
    read_frame,
    read_response,
    request,
    router_config,
    routes,
    start_router,
    ws_echo,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_routes_by_default_domain_and_custom_domain(etcd_endpoint, etcd_prefix):
    dyno = await Dyno("web.1").start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        await r.domain("www.demo.org", "demo")
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            res = await request(rt.port, "/hello?x=1")
            assert res.status == 200
            assert res.body == b"hello from web.1"
            assert res.headers["via"] == "1.1 slipway"
            res = await request(rt.port, host="WWW.demo.org:443")
            assert res.status == 200 and res.body == b"hello from web.1"
            res = await request(rt.port, host=f"nope.{BASE}")
            assert res.status == 404
            assert b"No such app" in res.body
            res = await request(rt.port, host="unknown.org")
            assert res.status == 404
    await dyno.stop()


async def test_forwarding_headers_added_and_hop_by_hop_stripped(etcd_endpoint, etcd_prefix):
    dyno = await Dyno("web.1").start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            good_id = "a" * 36
            await request(
                rt.port,
                headers={
                    "X-Forwarded-For": "10.1.2.3",
                    "X-Request-Id": good_id,
                    "Keep-Alive": "timeout=5",
                    "Proxy-Connection": "keep-alive",
                    "X-Secret-Hop": "1",
                    "Connection": "close, X-Secret-Hop",
                    "TE": "trailers",
                    "X-Forwarded-Proto": "https",
                },
            )
            seen = dyno.requests[-1].headers
            assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
            assert seen["x-forwarded-proto"] == "http"
            assert seen["x-forwarded-port"] == str(rt.port)
            assert seen["x-request-id"] == good_id
            assert seen["via"] == "1.1 slipway"
            start = int(seen["x-request-start"])
            assert 1_600_000_000_000 < start < 4_000_000_000_000  # milliseconds
            for gone in ("keep-alive", "proxy-connection", "x-secret-hop", "te", "connection"):
                assert gone not in seen
            # An invalid (too short) or overlong id is replaced by a UUID.
            for bad in ("short", "x" * 201, "has spaces in it but long enough"):
                await request(rt.port, headers={"X-Request-Id": bad})
                got = dyno.requests[-1].headers["x-request-id"]
                assert got != bad and len(got) == 36
    await dyno.stop()


async def test_keep_alive_pipelining_http10_and_pooled_upstream(etcd_endpoint, etcd_prefix):
    dyno = await Dyno("web.1").start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
            host = f"Host: demo.{BASE}\r\n"
            # three requests on one client connection, two of them pipelined
            writer.write(f"GET /1 HTTP/1.1\r\n{host}\r\n".encode())
            assert (await read_response(reader)).status == 200
            writer.write(f"GET /2 HTTP/1.1\r\n{host}\r\nGET /3 HTTP/1.1\r\n{host}\r\n".encode())
            assert (await read_response(reader)).status == 200
            assert (await read_response(reader)).status == 200
            writer.close()
            assert [q.path for q in dyno.requests] == ["/1", "/2", "/3"]
            # the router reused its pooled connection to the dyno
            assert dyno.connections == 1
            # HTTP/1.0 without keep-alive: answered, then closed
            data = await raw(rt.port, f"GET /old HTTP/1.0\r\n{host}\r\n".encode())
            assert data.startswith(b"HTTP/1.1 200")
            assert b"connection: close" in data.lower()
            assert data.endswith(b"hello from web.1")
    await dyno.stop()


async def test_stale_pooled_connection_is_retried_transparently(etcd_endpoint, etcd_prefix):
    async def close_after(
        req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        # Answer, then close the keep-alive connection as an app server's idle
        # timeout would, without saying "Connection: close".
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
        raise ConnectionResetError

    dyno = await Dyno("web.1", close_after).start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            for _ in range(20):
                res = await request(rt.port)
                assert res.status == 200 and res.body == b"ok"
    await dyno.stop()


async def test_chunked_both_ways_and_expect_continue(etcd_endpoint, etcd_prefix):
    async def stream(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"got ", str(len(req.body)).encode(), b" bytes"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    dyno = await Dyno("web.1", stream).start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
            writer.write(
                f"POST /up HTTP/1.1\r\nHost: demo.{BASE}\r\nTransfer-Encoding: chunked\r\n"
                "\r\n5\r\nhello\r\n".encode()
            )
            await asyncio.sleep(0)
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            res = await read_response(reader)
            assert res.status == 200
            assert res.headers["transfer-encoding"] == "chunked"
            assert res.body == b"got 11 bytes"
            assert dyno.requests[-1].body == b"hello world"
            # Expect: 100-continue is relayed from the dyno before the body is sent
            writer.write(
                f"PUT /c HTTP/1.1\r\nHost: demo.{BASE}\r\nExpect: 100-continue\r\n"
                "Content-Length: 4\r\n\r\n".encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            writer.write(b"data")
            res = await read_response(reader)
            assert res.status == 200 and res.body == b"got 4 bytes"
            writer.close()
    await dyno.stop()


async def test_head_and_no_content_responses(etcd_endpoint, etcd_prefix):
    dyno = await Dyno("web.1").start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
            host = f"Host: demo.{BASE}\r\n"
            writer.write(f"HEAD / HTTP/1.1\r\n{host}\r\n".encode())
            res = await read_response(reader, head_only=True)
            assert res.status == 200 and res.headers["content-length"] == "16"
            writer.write(f"GET / HTTP/1.1\r\n{host}\r\n".encode())
            res = await read_response(reader)
            assert res.body == b"hello from web.1"
            writer.close()
    await dyno.stop()


async def test_websocket_echo_through_the_router(etcd_endpoint, etcd_prefix):
    dyno = await Dyno("web.1", ws_echo).start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: demo.{BASE}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            res = await read_response(reader)
            assert res.status == 101
            assert res.headers["upgrade"] == "websocket"
            assert dyno.requests[-1].headers["upgrade"] == "websocket"
            for text in (b"hello", b"x" * 70000):
                writer.write(frame(1, text, mask=True))
                assert await read_frame(reader) == (1, text)
            writer.write(frame(8, b"", mask=True))
            assert (await read_frame(reader))[0] == 8
            assert await reader.read() == b""  # the dyno closed, so did the router
            writer.close()
    await dyno.stop()


async def test_http10_client_gets_a_dechunked_body_ended_by_close(etcd_endpoint, etcd_prefix):
    async def chunked(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        return True

    dyno = await Dyno("web.1", chunked).start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            data = await raw(
                rt.port,
                f"GET / HTTP/1.0\r\nHost: demo.{BASE}\r\nConnection: keep-alive\r\n\r\n".encode(),
            )
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"transfer-encoding" not in head.lower()  # HTTP/1.0 has no chunking
            assert b"connection: close" in head.lower()
            assert body == b"hello world"
    await dyno.stop()


async def test_an_open_websocket_holds_no_dyno_slot(etcd_endpoint, etcd_prefix):
    async def ws_or_plain(req: Req, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if "sec-websocket-key" in req.headers:
            return await ws_echo(req, reader, w)
        return False  # the plain answer

    dyno = await Dyno("web.1", ws_or_plain).start()
    config = router_config(etcd_endpoint, etcd_prefix, max_inflight_per_dyno=1)
    async with demo_router(etcd_endpoint, etcd_prefix, dyno, config) as rt:
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: demo.{BASE}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert (await read_response(reader)).status == 101
        # The dyno's only slot is free again: a plain request does not wait
        # in the backlog for the socket to close.
        res = await asyncio.wait_for(request(rt.port, "/plain"), 3)
        assert res.status == 200 and res.body == b"hello from web.1"
        writer.write(frame(1, b"still open", mask=True))
        assert await read_frame(reader) == (1, b"still open")
        writer.close()
    await dyno.stop()


class Refuser(Dyno):
    """Answers 413 as soon as it has a head, then records whatever else arrives."""

    head = b""
    extra = b""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
        await writer.drain()
        # Anything more is the body the client must not have been told to send.
        self.extra = await reader.read(100)
        writer.close()


async def test_expect_continue_answered_at_once_never_gets_the_body(etcd_endpoint, etcd_prefix):
    dyno = Refuser("web.1")
    await dyno.start()
    async with demo_router(etcd_endpoint, etcd_prefix, dyno) as rt:
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
        writer.write(
            f"PUT /big HTTP/1.1\r\nHost: demo.{BASE}\r\nExpect: 100-continue\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
        )
        res = await read_response(reader)
        assert res.status == 413 and res.body == b"too big!" and res.interim == []
        assert res.headers["connection"] == "close"  # the unsent body ends the connection
        assert b"expect: 100-continue" in dyno.head.lower()
        writer.close()
    await dyno.stop()
    assert dyno.extra == b""
