"""One router worker: the route table watcher, the log shipper, the metrics
endpoint, the deadline ticker and the listening sockets, under one TaskGroup.

Timeouts are not one timer per request: every connection carries a single
``deadline`` (a float) that the hot path moves forward, and one ticker task
checks them every ``limits.tick`` seconds. That keeps timer handles off the
per-request path at the cost of up to one tick of lateness.
"""

from __future__ import annotations

import asyncio
import socket

from router.balancer import Balancer
from router.config import RouterConfig
from router.exchange import Shared
from router.logs import LogShipper
from router.metrics import Metrics, MetricsServer
from router.proxy import ClientProtocol
from router.table import RouteTable, TableWatcher
from router.upstream import UpstreamPool
from slipway import log
from slipway.keys import Keys

logger = log.get(__name__)


class Router:
    def __init__(self, config: RouterConfig, *, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        self.keys = Keys(config.etcd_prefix)
        self.table = RouteTable(self.keys, config.base_domain)
        self.watcher = TableWatcher(
            config.etcd_endpoints,
            self.keys,
            self.table,
            backoff_initial=config.etcd_backoff_initial,
            backoff_max=config.etcd_backoff_max,
            resync_interval=config.resync_interval,
            credentials=config.credentials,
        )
        self.balancer = Balancer(config.limits)
        self.pool = UpstreamPool(
            config.limits.upstream_idle_timeout, config.limits.upstream_pool_size
        )
        self.shipper = LogShipper(config.logs, credentials=config.credentials)
        self.metrics = Metrics()
        self.addresses: list[tuple[str, int]] = []
        self.listening = asyncio.Event()
        self._stop = asyncio.Event()
        self.shared: Shared | None = None
        self.metrics_server: MetricsServer | None = None
        self._register_gauges()

    def _register_gauges(self) -> None:
        g = self.metrics.gauges
        g["slipway_router_route_apps"] = lambda: len(self.table.apps)
        g["slipway_router_route_dynos"] = lambda: sum(len(d) for d in self.table.dynos.values())
        g["slipway_router_route_revision"] = lambda: self.table.revision
        g["slipway_router_etcd_connected"] = lambda: int(self.watcher.connected)
        g["slipway_router_quarantined_dynos"] = lambda: sum(
            1 for a in list(self.balancer.quarantined) if self.balancer.is_quarantined(a)
        )
        g["slipway_router_quarantines_total"] = lambda: self.balancer.quarantines_total
        g["slipway_router_upstream_idle"] = self.pool.idle_count
        g["slipway_router_logs_published_total"] = lambda: self.shipper.published
        g["slipway_router_logs_dropped_total"] = lambda: self.shipper.dropped
        g["slipway_router_backlog"] = lambda: sum(len(q) for q in self.balancer.backlog.values())
        g["slipway_router_held_booting"] = lambda: (
            len(self.shared.boot_waiters) if self.shared else 0
        )
        if self.config.credentials is not None:
            # Read once: a new certificate takes a restart, like every daemon's.
            expires = int(self.config.credentials.identity().not_after.timestamp())
            g["slipway_router_certificate_expiry_timestamp_seconds"] = lambda: expires

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), then return."""
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        shared = self.shared = Shared(
            loop,
            config.limits,
            self.table,
            self.balancer,
            self.pool,
            self.shipper,
            self.metrics,
            config.forwarded_proto,
        )
        servers: list[asyncio.Server] = []
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.watcher.run(), name="route-watcher")
                tg.create_task(self.shipper.run(), name="log-shipper")
                tg.create_task(self._tick(shared), name="deadlines")
                if config.metrics_listen is not None:
                    m = config.metrics_listen
                    port = m.port + self.worker if m.port else 0
                    self.metrics_server = MetricsServer(self.metrics, m.host, port)
                    tg.create_task(self.metrics_server.run(), name="metrics")
                for listen in config.listen:
                    server = await loop.create_server(
                        lambda: ClientProtocol(shared),
                        listen.host,
                        listen.port,
                        reuse_port=config.workers > 1,
                        backlog=4096,
                    )
                    servers.append(server)
                    for sock in server.sockets:
                        if sock.family in (socket.AF_INET, socket.AF_INET6):
                            host, port = sock.getsockname()[:2]
                            self.addresses.append((host, port))
                logger.info(
                    "router listening",
                    addresses=[f"{h}:{p}" for h, p in self.addresses],
                    worker=self.worker,
                )
                self.listening.set()
                await self._stop.wait()
                await self._drain(servers, shared)
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            for server in servers:
                server.close()
            self.pool.close_all()

    async def _drain(self, servers: list[asyncio.Server], shared: Shared) -> None:
        for server in servers:
            server.close()
        # Idle keep-alive connections close now; busy ones get up to 10 s.
        for client in list(shared.clients):
            if not client.queue:
                client.close()
        try:
            async with asyncio.timeout(10.0):
                # Polling: there is no single event for "every connection is idle".
                while any(c.queue for c in shared.clients):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            logger.warning("shutting down with requests in flight")
        for client in list(shared.clients):
            client.close()

    async def _tick(self, shared: Shared) -> None:
        loop = asyncio.get_running_loop()
        tick = self.config.limits.tick
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for client in [c for c in shared.clients if c.deadline <= now]:
                client.on_deadline(now)
            self.pool.sweep(now)


class _Stopped(Exception):
    """Raised inside the task group to cancel its siblings on a clean stop."""
