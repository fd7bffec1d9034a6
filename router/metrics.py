"""Per-router counters and a Prometheus text endpoint.

Counters are plain ints bumped on the hot path; rendering happens only when
scraped. With several workers, worker N serves on the metrics port + N, since
each worker counts for itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from slipway import log

logger = log.get(__name__)


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[int, str]] = Counter()  # (status, H code or "")
        self.connections_active = 0
        self.connections_total = 0
        self.upstream_connects = 0
        self.upstream_reuses = 0
        self.upstream_retries = 0
        self.bad_requests = 0
        # Filled in by the router: gauges read at scrape time.
        self.gauges: dict[str, Callable[[], float]] = {}

    def request(self, status: int, code: str) -> None:
        self.requests[(status, code)] += 1

    def render(self) -> str:
        lines = [
            "# HELP slipway_router_requests_total Requests answered, by status and H code.",
            "# TYPE slipway_router_requests_total counter",
        ]
        for (status, code), count in sorted(self.requests.items()):
            lines.append(
                f'slipway_router_requests_total{{status="{status}",code="{code}"}} {count}'
            )
        plain = {
            "slipway_router_connections_active": ("gauge", self.connections_active),
            "slipway_router_connections_total": ("counter", self.connections_total),
            "slipway_router_upstream_connects_total": ("counter", self.upstream_connects),
            "slipway_router_upstream_reuses_total": ("counter", self.upstream_reuses),
            "slipway_router_upstream_retries_total": ("counter", self.upstream_retries),
            "slipway_router_bad_requests_total": ("counter", self.bad_requests),
        }
        for name, (kind, value) in plain.items():
            lines += [f"# TYPE {name} {kind}", f"{name} {value}"]
        for name, read in sorted(self.gauges.items()):
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# TYPE {name} {kind}", f"{name} {_number(read())}"]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Whole numbers in full (a timestamp must not become 1.8e+09), others as Python prints them."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsServer:
    """``GET /metrics`` (any path, really) -> the text format; one request per connection."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.listening = asyncio.Event()

    async def run(self) -> None:
        server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]  # the real one when asked for 0
        self.listening.set()
        logger.info("metrics listening", address=f"{self.host}:{self.port}")
        async with server:
            await server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                await reader.readuntil(b"\r\n\r\n")
                body = self.metrics.render().encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
