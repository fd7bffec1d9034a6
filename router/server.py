"""The router process: the Python control plane around one native data plane.

Python watches etcd and hands the data plane a new route table snapshot on
every change, collects its log batches for NATS, serves ``/metrics`` from its
counters and runs lifecycle: listening, readiness and drain. The data plane
(router/dataplane.py, router/native) owns every socket and does all the
per-request work on its own threads.
"""

from __future__ import annotations

import asyncio

from router.config import RouterConfig
from router.dataplane import NativePlane, PlaneSettings
from router.logs import LogShipper
from router.metrics import Metrics, MetricsServer
from router.table import RouteTable, TableWatcher
from slipway import errors, log
from slipway.keys import Keys

logger = log.get(__name__)

# Requests under way when a stop begins get this long to finish.
DRAIN_TIMEOUT = 10.0


def plane_settings(config: RouterConfig) -> PlaneSettings:
    limits = config.limits
    return PlaneSettings(
        workers=config.workers,
        proto=config.forwarded_proto,
        connect_timeout=limits.connect_timeout,
        response_timeout=limits.first_byte_timeout,
        idle_timeout=limits.client_keepalive_timeout,
        quarantine=limits.quarantine,
        max_attempts=limits.max_attempts,
        max_inflight_per_dyno=limits.max_inflight_per_dyno,
        backlog_per_dyno=limits.backlog_per_dyno,
        boot_timeout=limits.boot_timeout,
        upstream_idle_timeout=limits.upstream_idle_timeout,
        upstream_pool_size=limits.upstream_pool_size,
        body_idle_timeout=limits.idle_timeout,
    )


def default_certificate(config: RouterConfig) -> tuple[bytes, bytes]:
    """The operator's default certificate, read now (a new one takes a restart)."""
    if config.tls_cert is None or config.tls_key is None:
        raise errors.InvalidArgument(
            "HTTPS listeners need the default certificate: give --tls-cert and --tls-key"
        )
    try:
        return config.tls_cert.read_bytes(), config.tls_key.read_bytes()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read the default certificate: {exc}") from exc


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.keys = Keys(config.etcd_prefix)
        sealer = config.credentials.sealer() if config.credentials is not None else None
        self.table = RouteTable(self.keys, config.base_domain, sealer)
        self.watcher = TableWatcher(
            config.etcd_endpoints,
            self.keys,
            self.table,
            backoff_initial=config.etcd_backoff_initial,
            backoff_max=config.etcd_backoff_max,
            resync_interval=config.resync_interval,
            credentials=config.credentials,
        )
        self.plane = NativePlane(plane_settings(config))
        self.shipper = LogShipper(
            config.logs, source=self.plane.take_logs, credentials=config.credentials
        )
        self.metrics = Metrics(self.plane)
        self.addresses: list[tuple[str, int]] = []
        self.tls_addresses: list[tuple[str, int]] = []
        self.listening = asyncio.Event()
        self._stop = asyncio.Event()
        self.metrics_server: MetricsServer | None = None
        self._register_gauges()

    def _register_gauges(self) -> None:
        g = self.metrics.gauges
        g["slipway_router_route_apps"] = lambda: len(self.table.apps)
        g["slipway_router_route_dynos"] = lambda: sum(len(d) for d in self.table.dynos.values())
        g["slipway_router_route_revision"] = lambda: self.table.revision
        g["slipway_router_etcd_connected"] = lambda: int(self.watcher.connected)
        g["slipway_router_logs_published_total"] = lambda: self.shipper.published
        g["slipway_router_logs_dropped_total"] = lambda: (
            self.shipper.dropped + self.plane.counters()["log_lines_dropped"]
        )
        g["slipway_router_dataplane_threads"] = lambda: self.config.workers
        if self.config.credentials is not None:
            # Read once: a new certificate takes a restart, like every daemon's.
            expires = int(self.config.credentials.identity().not_after.timestamp())
            g["slipway_router_certificate_expiry_timestamp_seconds"] = lambda: expires

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), then return."""
        self._stop.set()

    async def run(self) -> None:
        config = self.config
        default = None
        if config.listen_tls:
            # Before anything listens: a bad certificate stops the start, clearly.
            default = default_certificate(config)
            try:
                self.plane.set_certificates(default, {})
            except ValueError as exc:
                raise errors.InvalidArgument(str(exc)) from exc
        self.plane.follow(self.table, default)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.watcher.run(), name="route-watcher")
                tg.create_task(self.shipper.run(), name="log-shipper")
                if config.metrics_listen is not None:
                    m = config.metrics_listen
                    self.metrics_server = MetricsServer(self.metrics, m.host, m.port)
                    tg.create_task(self.metrics_server.run(), name="metrics")
                for listen in config.listen:
                    port = self.plane.listen(listen.host, listen.port)
                    self.addresses.append((listen.host, port))
                for listen in config.listen_tls:
                    port = self.plane.listen(listen.host, listen.port, tls=True)
                    self.tls_addresses.append((listen.host, port))
                logger.info(
                    "router listening",
                    addresses=[f"{h}:{p}" for h, p in self.addresses],
                    https=[f"{h}:{p}" for h, p in self.tls_addresses],
                    threads=config.workers,
                )
                self.listening.set()
                await self._stop.wait()
                await self._drain()
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            self.plane.stop()

    async def _drain(self) -> None:
        self.plane.drain()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                # Polling: the data plane has no event to await from Python.
                while self.plane.counters()["requests_active"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            logger.warning(
                "shutting down with requests in flight",
                requests=self.plane.counters()["requests_active"],
            )


class _Stopped(Exception):
    """Raised inside the task group to cancel its siblings on a clean stop."""
