"""Request parsing and refusal in the client protocol, fed bytes directly.

A recording transport stands in for the socket (no network here): each probe
must be answered 400 (or 501) with ``Connection: close`` before any routing
happens, while a well-formed request reaches routing (a 404 on an empty table).
"""

from __future__ import annotations

import asyncio

import pytest

from router.balancer import Balancer
from router.config import Limits, LogConfig
from router.exchange import Shared
from router.logs import LogShipper
from router.metrics import Metrics
from router.proxy import ClientProtocol
from router.table import RouteTable
from router.upstream import UpstreamPool
from slipway.keys import Keys

HOST = "Host: demo.example.test\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.eof = False
        self.paused = False

    def get_extra_info(self, name: str) -> object:
        return {"peername": ("1.2.3.4", 5555), "sockname": ("0.0.0.0", 80)}.get(name)

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, parts: list[bytes]) -> None:
        self.written += b"".join(parts)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True


def feed(*chunks: bytes, **limits: int) -> tuple[ClientProtocol, RecordingTransport, Shared]:
    loop = asyncio.new_event_loop()
    try:
        lim = Limits(**limits)  # type: ignore[arg-type]
        table = RouteTable(Keys("/p"), "example.test")
        table.replace([], 1)
        shared = Shared(
            loop,
            lim,
            table,
            Balancer(lim),
            UpstreamPool(1.0, 4),
            LogShipper(LogConfig()),
            Metrics(),
        )
        proto = ClientProtocol(shared)
        transport = RecordingTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            proto.data_received(chunk)
        return proto, transport, shared
    finally:
        loop.close()


PROBES = {
    "cl_and_te": f"POST / HTTP/1.1\r\n{HOST}Content-Length: 4\r\nTransfer-Encoding: chunked"
    "\r\n\r\n0\r\n\r\n",
    "differing_cl": f"POST / HTTP/1.1\r\n{HOST}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "bad_chunk_size": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "negative_chunk": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n-1\r\n",
    "obs_fold": f"GET / HTTP/1.1\r\n{HOST}X-A: b\r\n c\r\n\r\n",
    "te_gzip": f"POST / HTTP/1.1\r\n{HOST}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "two_hosts": f"GET / HTTP/1.1\r\n{HOST}{HOST}\r\n",
    "nul_in_header": f"GET / HTTP/1.1\r\n{HOST}X-A: a\x00b\r\n\r\n",
    "garbage": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
}


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_refused_before_routing(name: str) -> None:
    _proto, transport, shared = feed(PROBES[name].encode())
    status = transport.written.split(b" ", 2)[1]
    assert status in (b"400", b"501"), transport.written[:60]
    assert b"Connection: close" in transport.written
    assert transport.eof  # lingering close: FIN first, then close
    assert shared.metrics.upstream_connects == 0
    assert not shared.pool.idle


def test_limits_on_request_line_and_headers() -> None:
    _, t, _ = feed(f"GET /{'a' * 100} HTTP/1.1\r\n{HOST}\r\n".encode(), max_line_bytes=64)
    assert t.written.startswith(b"HTTP/1.1 400")
    _, t, _ = feed(
        f"GET / HTTP/1.1\r\n{HOST}X-Big: {'b' * 100}\r\n\r\n".encode(), max_line_bytes=64
    )
    assert t.written.startswith(b"HTTP/1.1 400")
    many = "".join(f"X-{i}: {'c' * 40}\r\n" for i in range(10))
    _, t, _ = feed(f"GET / HTTP/1.1\r\n{HOST}{many}\r\n".encode(), max_head_bytes=200)
    assert t.written.startswith(b"HTTP/1.1 400")
    # an endless head arriving in pieces is cut off too
    pieces = [b"GET / HTTP/1.1\r\n", *([b"X-Slow: " + b"d" * 50 + b"\r\n"] * 10)]
    _, t, _ = feed(*pieces, max_head_bytes=300)
    assert t.written.startswith(b"HTTP/1.1 400")


def test_well_formed_request_reaches_routing() -> None:
    _, t, shared = feed(f"GET / HTTP/1.1\r\n{HOST}\r\n".encode())
    assert t.written.startswith(b"HTTP/1.1 404")  # empty table: no such app
    assert b"No such app" in t.written
    assert not t.closed  # keep-alive
    assert shared.metrics.bad_requests == 0


def test_pipelined_bad_request_answers_earlier_ones_first() -> None:
    good = f"GET /1 HTTP/1.1\r\n{HOST}\r\n"
    _, t, _ = feed((good + "GET / HTTP/1.1\r\nBad Header\r\n\r\n").encode())
    first, _, rest = t.written.partition(b"HTTP/1.1 400")
    assert first.startswith(b"HTTP/1.1 404") and rest
