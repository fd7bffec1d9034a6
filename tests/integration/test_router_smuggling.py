"""Malformed and smuggling-shaped requests get a 400 and never reach a dyno."""

from __future__ import annotations

import pytest

from tests.integration.test_router_harness import (
    BASE,
    Dyno,
    raw,
    request,
    router_config,
    routes,
    start_router,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HOST = f"Host: demo.{BASE}\r\n"
PROBES = {
    "cl_and_te": f"POST / HTTP/1.1\r\n{HOST}Content-Length: 4\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n"
    "Content-Length: 4\r\n\r\n0\r\n\r\n",
    "differing_cl": f"POST / HTTP/1.1\r\n{HOST}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl_list": f"POST / HTTP/1.1\r\n{HOST}Content-Length: 3, 4\r\n\r\nabcd",
    "bad_chunk_size": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n"
    "zz\r\nabc\r\n0\r\n\r\n",
    "chunk_overflow": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n"
    "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "obs_fold": f"GET / HTTP/1.1\r\n{HOST}X-Folded: a\r\n b\r\n\r\n",
    "te_not_chunked": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_chunked_not_last": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked, gzip\r\n\r\n",
    "space_before_colon": f"GET / HTTP/1.1\r\n{HOST}Content-Length : 5\r\n\r\nhello",
    "two_hosts": f"GET / HTTP/1.1\r\n{HOST}Host: other.{BASE}\r\n\r\n",
    "bare_lf": f"GET / HTTP/1.1\n{HOST}\n",
    "long_request_line": f"GET /{'a' * 9000} HTTP/1.1\r\n{HOST}\r\n",
    "long_header": f"GET / HTTP/1.1\r\n{HOST}X-Big: {'b' * 9000}\r\n\r\n",
    "huge_head": f"GET / HTTP/1.1\r\n{HOST}"
    + "".join(f"X-H{i}: {'c' * 4000}\r\n" for i in range(40))
    + "\r\n",
    "connect": f"CONNECT demo.{BASE}:443 HTTP/1.1\r\n{HOST}\r\n",
}


async def test_probes_get_400_and_no_dyno_connection(etcd_endpoint, etcd_prefix):
    dyno = await Dyno().start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            for name, probe in PROBES.items():
                try:
                    answer = await raw(rt.port, probe.encode())
                except TimeoutError:
                    raise AssertionError(f"{name}: no answer, connection left open") from None
                status = answer.split(b" ", 2)[1] if answer else b"(closed)"
                assert status in (b"400", b"501"), f"{name}: {answer[:80]!r}"
                assert b"connection: close" in answer.lower(), name
            assert dyno.connections == 0
            # and the router still routes good requests afterwards
            assert (await request(rt.port)).status == 200
            assert dyno.connections == 1
    await dyno.stop()


async def test_headers_up_to_the_limit_pass(etcd_endpoint, etcd_prefix):
    dyno = await Dyno().start()
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(router_config(etcd_endpoint, etcd_prefix)) as rt:
            big = "v" * 8000  # name + value just under 8 KB
            res = await request(rt.port, headers={"X-Big": big})
            assert res.status == 200
            assert dyno.requests[-1].headers["x-big"] == big
    await dyno.stop()
