"""slipway-agent: run dynos on this host for the controller.

One asyncio TaskGroup holds the supervisor, the log sink, the AttachService
(agent/attach.py), the controller link and (optionally) the gRPC health
service. SIGTERM or SIGINT cancels it; running dynos are left alone (systemd
runs us with KillMode=process), and the next agent adopts them. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from pathlib import Path

import click

from agent.attach import AttachServer, host_port
from agent.config import AGENT_VERSION, DEFAULT_RESERVE_MB, AgentConfig, RestartSchedule, Timings
from agent.config import default_memory_mb as _default_memory_mb
from agent.join import join_cmd, read_node_token
from agent.link import ControllerLink
from agent.main_runtime import build_runtime
from agent.model import DynoState
from agent.network import DynoNetwork
from agent.supervisor import DynoSupervisor
from slipway import conffile, errors, log, sdnotify, tls
from slipway.aio import wait_set
from slipway.backoff import Backoff
from slipway.pki import Bundle
from slipway.stackimage import stack_option

logger = log.get("agent")


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _port_range(value: str) -> tuple[int, int]:
    low, _, high = value.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError as exc:
        raise click.BadParameter("expected FIRST-LAST, e.g. 20000-29999") from exc
    if not 1024 <= lo <= hi <= 65535:
        raise click.BadParameter("ports must satisfy 1024 <= FIRST <= LAST <= 65535")
    return lo, hi


def _timings(value: str | None) -> Timings:
    """Timing overrides as JSON, e.g. '{"stop_grace": 5, "restart": {"cap": 60}}'."""
    if not value:
        return Timings()
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"--timings is not JSON: {exc}") from exc
    known = {f.name for f in fields(Timings)}
    unknown = set(data) - known
    if unknown:
        raise click.BadParameter(f"unknown timings: {', '.join(sorted(unknown))}")
    restart = RestartSchedule(**data.pop("restart", {}))
    return replace(Timings(**data), restart=restart)


class _Stopped(Exception):
    """Every dyno is down after a stop request: leave the task group."""


async def _stop_dynos_when(
    requested: asyncio.Event,
    supervisor: DynoSupervisor,
    link_task: asyncio.Task[None],
    config: AgentConfig,
) -> None:
    """On a stop request, stop every dyno (SIGTERM, grace, SIGKILL), then end the agent.

    The controller link goes first, so a desired set arriving meanwhile cannot
    start the dynos again.
    """
    await requested.wait()
    logger.info("agent stopping its dynos", node=config.node)
    link_task.cancel()
    await supervisor.set_desired([])
    t = config.timings
    deadline = time.monotonic() + t.route_drain + t.stop_grace + 15
    while time.monotonic() < deadline:
        if all(s.state is DynoState.DOWN for s in supervisor.snapshot()):
            break
        await asyncio.sleep(0.2)
    raise _Stopped


async def run_agent(config: AgentConfig, stop_requested: asyncio.Event | None = None) -> None:
    rt, fetch = build_runtime(config)
    supervisor = DynoSupervisor(rt)
    link = ControllerLink(config, supervisor)
    attach = AttachServer(config, supervisor) if config.attach_port is not None else None
    logger.info("agent starting", node=config.node, data_dir=str(config.data_dir))

    async def attach_port() -> int:
        # Registration and presence advertise the port, so they wait for it.
        if attach is None:
            return 0
        await attach.ready.wait()
        return attach.bound_port

    async def run_link() -> None:
        link.attach_port = await attach_port()
        await link.run()

    # Presence in etcd when configured, else the controller link, says "registered".
    registered = asyncio.Event() if config.etcd_endpoints else link.connected

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(supervisor.run())
            tg.create_task(rt.sink.run())
            if attach is not None:
                tg.create_task(attach.run())
            link_task = tg.create_task(run_link())
            if stop_requested is not None:
                tg.create_task(_stop_dynos_when(stop_requested, supervisor, link_task, config))
            if config.health_port:
                tg.create_task(_serve_health(config))
            if config.etcd_endpoints:
                tg.create_task(
                    _run_presence(config, supervisor, await_port=attach_port, registered=registered)
                )
                if rt.network is not None:
                    tg.create_task(_follow_addon_grants(config, supervisor, rt.network))
            tg.create_task(_notify_ready(config, supervisor, registered))
    except* _Stopped:
        logger.info("agent stopped its dynos", node=config.node)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(fetch.close(), 2)


async def _notify_ready(
    config: AgentConfig, supervisor: DynoSupervisor, registered: asyncio.Event
) -> None:
    """systemd Type=notify: READY=1 once dynos are adopted and the node is registered.

    Registration is waited for at most ``timings.ready_wait``: the agent is
    useful (dynos supervised) even while etcd or the controllers are away.
    """
    await supervisor.ready.wait()
    try:
        await wait_set(registered, config.timings.ready_wait)
        status = "dynos adopted; node registered"
    except TimeoutError:
        logger.warning("node not registered yet; reporting ready", node=config.node)
        status = "dynos adopted; node not registered yet"
    sdnotify.ready(status)


async def _run_presence(
    config: AgentConfig,
    supervisor: DynoSupervisor,
    *,
    await_port: Callable[[], Awaitable[int]],
    registered: asyncio.Event,
) -> None:
    """Node, dyno statuses and routes in etcd under the node's lease."""
    from agent.presence import Presence
    from slipway.etcd import Etcd
    from slipway.keys import Keys
    from slipway.records import NodeRecord

    await supervisor.ready.wait()
    port = await await_port()
    record = NodeRecord(
        name=config.node,
        address=config.advertise_address,
        capacity_mb=config.memory_mb,
        port_range=config.port_range,
        labels=dict(config.labels),
        agent_version=AGENT_VERSION,
        attach_port=port,
        stack=config.stack,
    )
    backoff = Backoff(initial=0.5, maximum=10.0)
    while True:
        etcd = Etcd(
            config.etcd_endpoints,
            credentials=config.credentials,
            timeout=config.timings.rpc_timeout,
        )
        try:
            await etcd.connect()
            presence = Presence(
                etcd, Keys(config.etcd_prefix), record, supervisor.snapshot, ttl=config.presence_ttl
            )
            presence.registered = registered  # shared with readiness (_notify_ready)
            await presence.run()
        except Exception as exc:
            # etcd away must never touch dynos: retry quietly.
            logger.warning("etcd presence failed", node=config.node, error=str(exc))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(etcd.close(), 2)
        await asyncio.sleep(backoff.next())


async def _follow_addon_grants(
    config: AgentConfig, supervisor: DynoSupervisor, network: DynoNetwork
) -> None:
    """The firewall opens what ``addongrants/`` says (agent/addon_grants.py)."""
    from agent.addon_grants import GrantFollower
    from slipway.etcd import Etcd
    from slipway.keys import Keys

    async def connect() -> Etcd:
        etcd = Etcd(
            config.etcd_endpoints,
            credentials=config.credentials,
            timeout=config.timings.rpc_timeout,
        )
        await etcd.connect()
        return etcd

    async def resync() -> None:
        await supervisor.ready.wait()  # the bridge is prepared, dynos adopted
        await network.sync()

    follower = GrantFollower(connect, Keys(config.etcd_prefix), resync)
    network.grants = lambda: follower.current
    await follower.run()


async def _serve_health(config: AgentConfig) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    tls.add_port(
        server, host_port(config.advertise_address, config.health_port), config.credentials
    )
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        await asyncio.Future()
    finally:
        await server.stop(1)


async def _main(config: AgentConfig) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals_seen = 0
    stop_requested = asyncio.Event()

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            os._exit(1)
        sdnotify.stopping()
        if config.stop_dynos_on_exit:
            stop_requested.set()
            return
        logger.info("agent stopping; dynos keep running")
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    with contextlib.suppress(asyncio.CancelledError):
        await run_agent(config, stop_requested)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@conffile.config_option("SLIPWAY_AGENT_CONFIG")
@click.option(
    "--controllers",
    envvar="SLIPWAY_CONTROLLERS",
    default="127.0.0.1:7070",
    show_default=True,
    help="Controller gRPC addresses, comma-separated.",
)
@click.option(
    "--node",
    envvar="SLIPWAY_NODE",
    help="Node name.  [default: the name in --credentials' node certificate, else the hostname]",
)
@click.option(
    "--advertise-address",
    envvar="SLIPWAY_ADVERTISE_ADDRESS",
    default="127.0.0.1",
    show_default=True,
    help="Address routers use to reach this node's dynos.",
)
@click.option(
    "--port-range",
    envvar="SLIPWAY_PORT_RANGE",
    default="20000-29999",
    show_default=True,
    help="Ports for web dynos.",
)
@click.option(
    "--data-dir",
    envvar="SLIPWAY_AGENT_DATA_DIR",
    default="/var/lib/slipway/agent",
    show_default=True,
    type=click.Path(path_type=Path),
)
@click.option("--memory-mb", envvar="SLIPWAY_MEMORY_MB", type=int, help="Memory for dynos.")
@click.option("--reserve-mb", type=int, default=DEFAULT_RESERVE_MB, show_default=True)
@click.option("--label", "labels", multiple=True, help="key=value, repeatable.")
@click.option(
    "--nats",
    envvar="SLIPWAY_NATS",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help="NATS servers, comma-separated.",
)
@click.option(
    "--etcd",
    envvar="SLIPWAY_ETCD",
    default="",
    help="etcd endpoints (host:port, comma-separated) for node presence and routes.",
)
@click.option("--etcd-prefix", envvar="SLIPWAY_ETCD_PREFIX", default="/slipway", show_default=True)
@click.option("--presence-ttl", type=int, default=10, show_default=True, help="Lease TTL, s.")
@click.option(
    "--token",
    envvar="SLIPWAY_TOKEN",
    default="",
    help="The node's token for the controller.  [default: DIR/node-token with "
    "--credentials DIR, from `slipway-agent join`]",
)
@click.option(
    "--stop-dynos-on-exit",
    is_flag=True,
    envvar="SLIPWAY_STOP_DYNOS_ON_EXIT",
    help="On SIGTERM stop every dyno first (default: dynos outlive the agent and get adopted).",
)
@click.option("--runc", "runc_binary", envvar="SLIPWAY_RUNC", help="runc binary.")
@stack_option("run")
@click.option("--container-prefix", default="slipway", show_default=True)
@click.option("--health-port", type=int, default=0, help="gRPC health service port (0: off).")
@click.option(
    "--attach-port",
    envvar="SLIPWAY_ATTACH_PORT",
    type=int,
    default=0,
    show_default=True,
    help="Port of the AttachService (slipway run) on the advertise address; "
    "0: any free port (advertised to controllers); -1: off.",
)
@click.option(
    "--dyno-network",
    type=click.Choice(["isolated", "host"]),
    default="isolated",
    show_default=True,
    help="isolated: a network namespace per dyno behind the agent's firewall; "
    "host: dynos share the host's network (no isolation).",
)
@click.option(
    "--dyno-subnet", default="", help="IPv4 subnet of this node's dynos (default: a free /24)."
)
@click.option(
    "--router-ports",
    default="",
    help="Ports of the routers' public listeners on this host that dynos may call "
    "(comma-separated).",
)
@click.option(
    "--router-sources",
    default="",
    help="CIDRs of routers on other hosts allowed to reach web dynos, comma-separated.",
)
@click.option(
    "--deny-cidrs",
    default="",
    help="Destinations dynos may never reach (e.g. the platform's network), comma-separated.",
)
@click.option("--timings", "timings_json", envvar="SLIPWAY_AGENT_TIMINGS", help="JSON overrides.")
@tls.credentials_options
@click.option("--log-level", envvar="SLIPWAY_LOG_LEVEL", default="info")
def main(
    controllers: str,
    node: str | None,
    advertise_address: str,
    port_range: str,
    data_dir: Path,
    memory_mb: int | None,
    reserve_mb: int,
    labels: tuple[str, ...],
    nats: str,
    etcd: str,
    etcd_prefix: str,
    presence_ttl: int,
    token: str,
    stop_dynos_on_exit: bool,
    runc_binary: str | None,
    stack: str,
    container_prefix: str,
    health_port: int,
    attach_port: int,
    dyno_network: str,
    dyno_subnet: str,
    router_ports: str,
    router_sources: str,
    deny_cidrs: str,
    timings_json: str | None,
    credentials: Bundle | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Run dynos on this host for the Slipway controller.

    `slipway-agent join --help`: admit this host with a join token first.
    """
    log.configure("agent", log_level)
    node, token = _identity(node, token, credentials)
    parsed_labels = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"label {item!r} is not key=value")
        parsed_labels[key] = value
    config = AgentConfig(
        data_dir=data_dir.resolve(),
        controllers=_split(controllers),
        node=node,
        advertise_address=advertise_address,
        port_range=_port_range(port_range),
        memory_mb=memory_mb if memory_mb is not None else _default_memory_mb(reserve_mb),
        labels=parsed_labels,
        nats_servers=_split(nats),
        timings=_timings(timings_json),
        runc_binary=runc_binary,
        stack=stack,
        container_prefix=container_prefix,
        health_port=health_port,
        attach_port=None if attach_port < 0 else attach_port,
        etcd_endpoints=_split(etcd),
        etcd_prefix=etcd_prefix,
        presence_ttl=presence_ttl,
        token=token,
        stop_dynos_on_exit=stop_dynos_on_exit,
        dyno_network=dyno_network,
        dyno_subnet=dyno_subnet,
        router_ports=tuple(int(p) for p in _split(router_ports)),
        router_sources=_split(router_sources),
        deny_cidrs=_split(deny_cidrs),
        credentials=credentials,
    )
    asyncio.run(_main(config))


def _identity(node: str | None, token: str, credentials: Bundle | None) -> tuple[str, str]:
    """The node name and token: flags first, then what `join` left in the bundle."""
    if credentials is not None:
        try:
            named = credentials.identity().node
        except errors.SlipwayError as exc:
            raise click.BadParameter(str(exc), param_hint="--credentials") from exc
        if node and named and node != named:
            raise click.BadParameter(
                f"the certificate in {credentials.path} is node {named!r}'s, not {node!r}",
                param_hint="--node",
            )
        node = node or named
        token = token or read_node_token(credentials.path)
    return node or socket.gethostname(), token


def entry() -> None:
    """``slipway-agent [OPTIONS]`` runs the agent; ``slipway-agent join ...`` admits the host."""
    if sys.argv[1:2] == ["join"]:
        join_cmd(args=sys.argv[2:], prog_name="slipway-agent join")
    else:
        main(prog_name="slipway-agent")


if __name__ == "__main__":
    entry()
