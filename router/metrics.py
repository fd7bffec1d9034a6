"""The router's Prometheus text endpoint: the data plane's counters, read
when scraped, plus gauges the control plane registers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from router.dataplane import NativePlane
from slipway import log

logger = log.get(__name__)

# counters() key -> (metric name, type)
_PLANE_METRICS = {
    "connections_active": ("slipway_router_connections_active", "gauge"),
    "connections_total": ("slipway_router_connections_total", "counter"),
    "requests_active": ("slipway_router_requests_active", "gauge"),
    "upstream_connects": ("slipway_router_upstream_connects_total", "counter"),
    "upstream_reuses": ("slipway_router_upstream_reuses_total", "counter"),
    "upstream_retries": ("slipway_router_upstream_retries_total", "counter"),
    "upstream_idle": ("slipway_router_upstream_idle", "gauge"),
    "bad_requests": ("slipway_router_bad_requests_total", "counter"),
    "tls_handshake_failures": ("slipway_router_tls_handshake_failures_total", "counter"),
    "quarantines": ("slipway_router_quarantines_total", "counter"),
    "waiting": ("slipway_router_backlog", "gauge"),
    "held_booting": ("slipway_router_held_booting", "gauge"),
    "panics": ("slipway_router_dataplane_panics_total", "counter"),
}


class Metrics:
    def __init__(self, plane: NativePlane) -> None:
        self.plane = plane
        # Filled in by the router: gauges read at scrape time.
        self.gauges: dict[str, Callable[[], float]] = {}

    def render(self) -> str:
        lines = [
            "# HELP slipway_router_requests_total Requests answered, by status and H code.",
            "# TYPE slipway_router_requests_total counter",
        ]
        for status, code, count in sorted(self.plane.answers()):
            lines.append(
                f'slipway_router_requests_total{{status="{status}",code="{code}"}} {count}'
            )
        counters = self.plane.counters()
        for key, (name, kind) in _PLANE_METRICS.items():
            lines += [f"# TYPE {name} {kind}", f"{name} {counters[key]}"]
        name = "slipway_router_quarantined_dynos"
        lines += [f"# TYPE {name} gauge", f"{name} {len(self.plane.quarantined())}"]
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
