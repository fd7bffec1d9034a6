"""The controller daemon: one TaskGroup owning the gRPC server and its loops."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from controller.api import v3_resources
from controller.api.addon_callback import CallbackServer
from controller.api.auth import Access, Policy, Tokens
from controller.api.build_api import BuildServices
from controller.api.builds import Builds
from controller.api.join import AdmitHook, JoinAPI, JoinTokens, admit_nothing
from controller.api.nodes import NodeAPI
from controller.api.platform import PlatformAPI
from controller.api.run_api import RunService
from controller.api.v3_http import PlatformV3
from controller.bus.addon_provider import ProviderClient
from controller.bus.apilog import ApiLog
from controller.bus.buildbus import BuildBus
from controller.bus.drains import DrainPool
from controller.bus.logs import LogHub
from controller.config import ControllerConfig
from controller.core.sizes import SizeTable
from controller.loops.acme import AcmeLoop, AcmeSettings
from controller.loops.addons import AddonLoop
from controller.loops.build_watcher import BuildWatcher
from controller.loops.cron import CronLoop
from controller.loops.edge_certs import EdgeCertificates
from controller.loops.gc import Collector
from controller.loops.leader import Leadership
from controller.loops.oneoff import OneOffs, Reaper
from controller.loops.reconciler import Reconciler
from controller.loops.release_phase import ReleasePhase
from controller.store.accounts import Accounts
from controller.store.acme import AcmeStore
from controller.store.addons import Addons
from controller.store.audit import AuditTrail
from controller.store.build_records import BuildStore
from controller.store.cron import Jobs
from controller.store.domains import Domains
from controller.store.placements import PlacementIndex
from controller.store.state import State
from slipway import etcdauth, pki, sdnotify, tls
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.v1 import join_pb2_grpc, node_pb2_grpc, platform_pb2_grpc

log = slog.get("controller")

SERVICES = ("slipway.v1.PlatformService", "slipway.v1.NodeService", "slipway.v1.JoinService")


class Controller:
    def __init__(
        self, config: ControllerConfig, *, on_node_admitted: AdmitHook | None = None
    ) -> None:
        self.config = config
        self.keys = Keys(config.etcd_prefix)
        self.etcd = Etcd(config.etcd, credentials=config.credentials)
        self.sizes = SizeTable(config.sizes)
        # One clock for every component: the only place the controller reads real time.
        self.clock: Clock = SystemClock()
        clock = self.clock
        self.state = State(self.etcd, self.keys, self.sizes, clock=clock)
        # Without credentials (plaintext) agents may still present an API token.
        policy = Policy(legacy_node_api_tokens=config.credentials is None)
        self.tokens = Tokens(self.etcd, self.keys, clock=clock, policy=policy)
        self.join_tokens = JoinTokens(self.etcd, self.keys, clock=clock)
        self.accounts = Accounts(self.etcd, self.keys, clock=clock)
        self.access = Access(self.tokens, self.accounts, clock)
        self.audit = AuditTrail(self.etcd, self.keys)
        # Set before run(): called with a node's name when it joins (etcd RBAC).
        self.on_node_admitted: AdmitHook | None = on_node_admitted
        self.health = HealthServicer()
        identity = (
            config.identity or f"{socket.gethostname()}:{config.listen}:{uuid.uuid4().hex[:6]}"
        )
        self.leadership = Leadership(self.etcd, self.keys, identity, ttl=config.leader_ttl_seconds)
        self.placements = PlacementIndex(self.etcd, self.keys)
        self.node_api = NodeAPI(
            self.etcd,
            self.keys,
            self.tokens,
            self.placements,
            heartbeat_seconds=config.heartbeat_seconds,
            ttl_seconds=config.node_ttl_seconds,
            clock=clock,
        )
        self._init_builds(config)
        # One-off dynos (slipway run): any controller relays; the leader reaps.
        self.oneoffs = OneOffs(
            self.state,
            self.sizes,
            lease_seconds=config.run_lease_seconds,
            detached_max_seconds=config.run_max_seconds,
            clock=clock,
        )
        self.run_service = RunService(
            self.oneoffs,
            self.access,
            idle_seconds=config.run_idle_seconds,
            max_seconds=config.run_max_seconds,
            clock=clock,
            credentials=config.credentials,
        )
        self.run_service.audit = self.audit
        self.log_hub = LogHub(
            config.nats,
            replicas=config.nats_replicas,
            max_per_app=config.logs_max_lines_per_app,
            max_bytes=config.logs_max_bytes,
            max_age=config.logs_max_age_seconds,
            tail_buffer=config.logs_tail_buffer,
            clock=clock,
            credentials=config.credentials,
        )
        self.api_log = ApiLog(self.log_hub, clock=clock)
        self.reaper = Reaper(
            self.oneoffs, self.leadership, interval=config.resync_seconds, app_log=self.api_log
        )
        # Scheduler jobs: any controller edits them; the leader runs them.
        self.jobs = Jobs(self.state, minute_seconds=config.scheduler_minute_seconds)
        self.cron_loop = CronLoop(
            self.jobs,
            self.leadership,
            tick=config.scheduler_tick_seconds,
            app_log=self.api_log,
        )
        # Automated certificates over ACME, when an ACME server is configured.
        self.acme_loop = self._acme_loop(config, clock)
        # With the cluster CA at hand (slipway up): an HTTPS certificate per app.
        self.edge_certs = (
            EdgeCertificates(
                self.state,
                self.leadership,
                Path(config.ca_dir),
                config.base_domain,
                interval=config.resync_seconds * 12,
                clock=clock,
            )
            if config.app_certificates_from_ca
            else None
        )
        # Log drains: every controller sends its share (controller/bus/drains.py).
        self.drain_pool = DrainPool(
            self.etcd,
            self.keys,
            self.log_hub,
            identity,
            ttl=config.drain_ttl_seconds,
            ca_file=config.drain_ca_file,
        )
        self.reconciler = Reconciler(
            self.etcd,
            self.keys,
            self.sizes,
            self.leadership,
            resync_seconds=config.resync_seconds,
            cycle_seconds=config.dyno_cycle_hours * 3600,
            app_log=self.api_log,
            clock=clock,
        )
        self._init_addons(config)
        self.bound_port = 0
        self.platform_v3: PlatformV3 | None = None
        self._server: grpc.aio.Server | None = None
        self.ready = asyncio.Event()

    def _init_addons(self, config: ControllerConfig) -> None:
        """Add-ons: records (every controller), provider callbacks (every controller,
        HTTPS), provider requests and attachment releases (the leader)."""
        self.addons = Addons(self.state)
        context = (
            tls.server_context(config.credentials, require_client_cert=False)
            if config.credentials is not None
            else None
        )
        self.addon_callbacks = (
            CallbackServer(self.addons, config.addons_listen, context)
            if config.addons_listen
            else None
        )
        self.addon_loop = AddonLoop(
            self.addons,
            self.leadership,
            ProviderClient(region=config.addons_region),
            callback_base=self._callback_base,
            tick=config.addons_tick_seconds,
            clock=self.clock,
        )
        if self.addon_callbacks is not None:
            self.addon_callbacks.on_change = self.addon_loop.wake

    def _callback_base(self) -> str:
        if self.config.addons_callback_url:
            return self.config.addons_callback_url
        if self.addon_callbacks is None:
            return ""
        host = self.config.addons_listen.rpartition(":")[0] or "127.0.0.1"
        scheme = "https" if self.config.credentials is not None else "http"
        return f"{scheme}://{host}:{self.addon_callbacks.port}"

    def _init_builds(self, config: ControllerConfig) -> None:
        """Builds: NATS link, upload handling, the leader's status watcher and GC."""
        self.bus = BuildBus(
            config.nats, replicas=config.nats_replicas, credentials=config.credentials
        )
        self.build_store = BuildStore(self.etcd, self.keys)
        builds = Builds(
            self.state,
            self.build_store,
            self.bus,
            max_source_bytes=config.max_source_mb << 20,
            clock=self.clock,
        )
        self.collector = Collector(
            self.state,
            self.build_store,
            self.bus,
            self.leadership,
            keep_releases=config.gc_keep_releases,
            interval=config.gc_interval_seconds,
            min_age=config.gc_min_age_seconds,
            clock=self.clock,
        )
        self.build_services = BuildServices(builds, self.build_store, self.bus, self.collector)
        self.build_watcher = BuildWatcher(
            self.state,
            self.build_store,
            self.bus,
            self.leadership,
            ReleasePhase(
                self.state,
                self.build_store,
                self.bus,
                self.sizes,
                timeout=config.release_timeout_seconds,
                place_timeout=config.release_place_seconds,
                clock=self.clock,
            ),
            build_timeout=config.build_timeout_seconds,
            grace=config.build_grace_seconds,
            pending_timeout=config.build_pending_seconds,
            clock=self.clock,
        )

    async def _start_server(self) -> grpc.aio.Server:
        size = self.config.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 0),
            ]
        )
        api = PlatformAPI(
            self.state,
            self.access,
            self.audit,
            app_url=self.config.app_url,
            base_domain=self.config.base_domain,
            sealer=self.config.credentials.sealer() if self.config.credentials else None,
            builds=self.build_services,
            log_hub=self.log_hub,
            api_log=self.api_log,
            clock=self.clock,
        )
        api.run_service = self.run_service
        api.addons = self.addons
        api.jobs = self.jobs
        api.addons_wake = self.addon_loop.wake
        if self.edge_certs is not None:
            api.apps_changed = self.edge_certs.wake
        if self.acme_loop is not None:
            api.acme_wake = self.acme_loop.wake
        api.addon_provider = self.addon_loop.provider
        api.reconcile_passes = lambda: self.reconciler.passes
        platform_pb2_grpc.add_PlatformServiceServicer_to_server(api, server)
        node_pb2_grpc.add_NodeServiceServicer_to_server(self.node_api, server)
        join_pb2_grpc.add_JoinServiceServicer_to_server(self._join_api(), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # Server-side TLS only: API callers prove themselves with tokens (see tls.py).
        self.bound_port = tls.add_port(server, self.config.listen, self.config.credentials)
        if not self.bound_port:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service in SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return server

    def _platform_v3(self) -> PlatformV3 | None:
        """The Heroku-shaped HTTP API, a client of this controller's own gRPC API."""
        config = self.config
        if not config.platform_api_listen:
            return None
        bundle = config.credentials
        api = PlatformV3(
            config.platform_api_listen,
            tls.server_context(bundle, require_client_cert=False) if bundle else None,
            f"127.0.0.1:{self.bound_port}",
            tls.grpc_channel_credentials(None, ca_file=bundle.ca_file) if bundle else None,
            clock=self.clock,
        )
        v3_resources.register(api)
        return api

    def _acme_loop(self, config: ControllerConfig, clock: Clock) -> AcmeLoop | None:
        if not config.acme_directory:
            return None
        context = ssl.create_default_context(cafile=config.acme_ca_file or None)
        settings = AcmeSettings(
            directory=config.acme_directory,
            contact=config.acme_email,
            context=context,
            propagation=config.acme_propagation_seconds,
            poll_interval=config.acme_poll_seconds,
        )
        sealer = config.credentials.sealer() if config.credentials else None
        return AcmeLoop(
            Domains(self.state, config.base_domain, sealer),
            AcmeStore(self.state),
            self.leadership,
            settings,
            interval=config.resync_seconds * 60,
            clock=clock,
        )

    def _join_api(self) -> JoinAPI:
        ca = pki.load_ca(Path(self.config.ca_dir)) if self.config.ca_dir else None
        return JoinAPI(
            self.join_tokens,
            self.tokens,
            ca,
            on_node_admitted=self.on_node_admitted or self._default_admission(),
        )

    def _default_admission(self) -> AdmitHook:
        """On a sealed etcd a joining node gets its own user and role (it may
        write only its own presence and its dynos' records)."""
        if self.config.credentials is None:
            return admit_nothing

        async def admit(node: str) -> None:
            await etcdauth.ensure_node(self.etcd, self.config.etcd_prefix, node)

        return admit

    async def run(self) -> None:
        await self.etcd.connect()
        self._server = await self._start_server()
        if self.addon_callbacks is not None:
            await self.addon_callbacks.start()
        self.platform_v3 = self._platform_v3()
        if self.platform_v3 is not None:
            await self.platform_v3.start()
        log.info(
            "controller listening",
            listen=self.config.listen,
            port=self.bound_port,
            tls=self.config.credentials is not None,
            admits_nodes=bool(self.config.ca_dir),
            etcd=",".join(self.config.etcd),
            prefix=self.config.etcd_prefix,
        )
        self.ready.set()
        sdnotify.ready(f"serving on {self.config.listen}")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._server.wait_for_termination())
                tg.create_task(self.placements.run())
                tg.create_task(self.leadership.run())
                tg.create_task(self.reconciler.run())
                tg.create_task(self.bus.run())
                tg.create_task(self.build_watcher.run())
                tg.create_task(self.collector.run())
                tg.create_task(self.reaper.run())
                tg.create_task(self.log_hub.run())
                tg.create_task(self.api_log.run())
                tg.create_task(self.drain_pool.run())
                tg.create_task(self.addon_loop.run())
                tg.create_task(self.cron_loop.run())
                if self.addon_callbacks is not None:
                    tg.create_task(self.addon_callbacks.run())
                if self.edge_certs is not None:
                    tg.create_task(self.edge_certs.run())
                if self.acme_loop is not None:
                    tg.create_task(self.acme_loop.run())
                if self.platform_v3 is not None:
                    tg.create_task(self.platform_v3.run())
        finally:
            await self.health.enter_graceful_shutdown()
            await self._server.stop(grace=3)
            await self.etcd.close()
            log.info("controller stopped")


async def serve(config: ControllerConfig, *, on_node_admitted: AdmitHook | None = None) -> None:
    """Run until SIGTERM/SIGINT; a second signal forces exit."""
    controller = Controller(config, on_node_admitted=on_node_admitted)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if stopping:
            log.warning("second signal, exiting now")
            raise SystemExit(1)
        stopping = True
        log.info("stopping")
        sdnotify.stopping()
        if task is not None:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await controller.run()
    except asyncio.CancelledError:
        if not stopping:
            raise
