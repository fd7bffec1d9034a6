"""The router's own Python cost per proxied request, without sockets (a script, not a test).

bench_router.py measures the whole router against nginx and HAProxy; there the
kernel's loopback TCP work (about 16-20 us per proxied request on this
machine, the bulk of nginx's total) is mixed in. This script drives the real
ClientProtocol, Exchange and UpstreamConnection with transports that only
count writes, so what it prints is the interpreter's share alone: request
parse, routing, the dyno's response relayed, the log line queued. It tells how
far pure-Python tuning can go before the I/O floor is reached.

    .venv/bin/python benchmarks/bench_router_python.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.balancer import Balancer
from router.config import Limits, LogConfig
from router.exchange import Shared
from router.logs import LogShipper
from router.metrics import Metrics
from router.proxy import ClientProtocol
from router.table import RouteTable
from router.upstream import UpstreamConnection, UpstreamPool
from slipway.etcd import KV
from slipway.keys import Keys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.bench.test\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
# What the benchmark's nginx backend answers.
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 03:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 33\r\nConnection: keep-alive\r\n\r\n"
    b"hello from the benchmark backend\n"
)


class CountingTransport:
    """Takes writes and counts them; enough of a transport for the protocols."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = extra
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str) -> Any:
        return self.extra.get(name)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True


async def measure(requests: int) -> tuple[float, int, int]:
    loop = asyncio.get_running_loop()
    keys = Keys("/bench")
    table = RouteTable(keys, "bench.test")
    dyno = {"app": "bench", "dyno": "web.1", "address": "127.0.0.1:9", "node": "n", "release": 1}
    table.replace(
        [
            KV(keys.route_app("bench"), json.dumps({"web": 1, "released": True}).encode(), 1, 1),
            KV(keys.route_dyno("bench", "web.1"), json.dumps(dyno).encode(), 1, 1),
        ],
        1,
    )
    limits = Limits()
    pool = UpstreamPool(limits.upstream_idle_timeout, limits.upstream_pool_size)
    shipper = LogShipper(LogConfig(servers=()))
    shared = Shared(loop, limits, table, Balancer(limits), pool, shipper, Metrics())
    client = ClientProtocol(shared)
    to_client = CountingTransport({"peername": ("127.0.0.1", 40000), "sockname": ("0", 80)})
    client.connection_made(to_client)  # type: ignore[arg-type]
    upstream = UpstreamConnection(pool, "127.0.0.1:9")
    to_dyno = CountingTransport({})
    upstream.connection_made(to_dyno)  # type: ignore[arg-type]
    pool.put(upstream, loop.time())
    queued = shipper._queue  # lines are queued here, never published

    started = time.perf_counter()
    for _ in range(requests):
        client.data_received(REQUEST)
        conn = client.queue[0].upstream
        assert conn is not None, "the request did not reach the pooled dyno connection"
        conn.data_received(RESPONSE)
        if len(queued) > 1000:
            queued.clear()
    elapsed = time.perf_counter() - started
    return elapsed, to_client.writes, to_dyno.writes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    best = float("inf")
    for rnd in range(args.rounds):
        elapsed, client_writes, dyno_writes = uvloop.run(measure(args.requests))
        if client_writes != args.requests or dyno_writes != args.requests:
            sys.exit(f"expected one write each way per request, got {client_writes}/{dyno_writes}")
        per_request = elapsed / args.requests * 1e6
        best = min(best, per_request)
        print(f"  round {rnd + 1}: {per_request:.1f} us of Python per proxied request")
    print(
        f"router Python cost: {best:.1f} us per request (best of {args.rounds}; "
        f"{args.requests} keep-alive GETs, pooled dyno connection, log line queued, no I/O)"
    )


if __name__ == "__main__":
    main()
