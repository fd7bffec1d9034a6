"""Agent configuration: one dataclass for addresses and places, one for timings.

Every duration the dyno runtime waits on lives in ``Timings`` so tests can
shrink them to fractions of a second; defaults are Heroku's numbers.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from slipway.pki import Bundle

AGENT_VERSION = "0.1.0"
DEFAULT_RESERVE_MB = 512


@dataclass(frozen=True)
class RestartSchedule:
    """Crash restart cool-offs (Cloud Foundry's shape, which the brief offers).

    The first ``immediate`` restarts happen at once; after that each wait is
    ``initial`` doubled per further crash, capped at ``cap``. The count resets
    after a run lasting ``reset_after`` seconds, a new release or a restart.
    """

    immediate: int = 3
    initial: float = 30.0
    factor: float = 2.0
    cap: float = 16 * 60.0
    reset_after: float = 10 * 60.0


@dataclass(frozen=True)
class Timings:
    boot_timeout: float = 60.0  # R10: web must accept on $PORT within this
    stop_grace: float = 30.0  # R12: SIGTERM -> SIGKILL
    route_drain: float = 1.0  # web dyno: route withdrawn this long before SIGTERM
    up_probe_interval: float = 0.2  # how often a starting web dyno's port is tried
    memory_interval: float = 2.0  # cgroup memory sampling period
    r14_interval: float = 20.0  # at most one R14 line per dyno per this period
    memory_hard_factor: float = 2.0  # cgroup limit = quota x this (R15 point)
    launch_timeout: float = 30.0  # shim spawn -> pid file, else the start failed
    restart: RestartSchedule = field(default_factory=RestartSchedule)
    heartbeat_interval: float = 5.0
    rpc_timeout: float = 10.0  # deadline of unary gRPC calls
    reconnect_initial: float = 0.5
    reconnect_max: float = 15.0
    # Attached one-offs: how long an Attach call waits for its dyno to be placed
    # here and launched (slug download included); how long an exited dyno's
    # output waits for a client that never came; SIGHUP -> SIGTERM on a stop.
    attach_timeout: float = 120.0
    attach_linger: float = 60.0
    hangup_grace: float = 2.0
    # systemd readiness: READY=1 once dynos are adopted and the node is registered
    # (etcd presence, else the controller link), or after this long regardless:
    # dynos run either way, and a start job should not hang on a far-away etcd.
    ready_wait: float = 30.0


def default_memory_mb(reserve_mb: int = DEFAULT_RESERVE_MB) -> int:
    total_mb = psutil.virtual_memory().total // (1024 * 1024)
    return max(0, int(total_mb) - reserve_mb)


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path
    # The address routers use to reach dynos. Only the CLI flag has a default;
    # code always reads it from here.
    advertise_address: str
    controllers: tuple[str, ...] = ()
    node: str = field(default_factory=socket.gethostname)
    port_range: tuple[int, int] = (20000, 29999)
    memory_mb: int = field(default_factory=default_memory_mb)
    labels: dict[str, str] = field(default_factory=dict)
    nats_servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    timings: Timings = field(default_factory=Timings)
    runc_binary: str | None = None
    # The stack dynos run on: a stack image's run flavour, or "host" (development).
    stack: str = "slipway-24"
    # runc state directory; one per agent so tests never see each other's
    # containers. Defaults to DATA/runc.
    runc_root: Path | None = None
    # Prefix of container ids and cgroup paths, so several agents on one host
    # (tests, simulated nodes) never collide.
    container_prefix: str = "slipway"
    log_queue_size: int = 10_000
    # etcd presence (agent/presence.py): node record, dyno statuses and routes
    # under the node's lease. Empty endpoints: not written.
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = "/slipway"
    presence_ttl: int = 10
    # API token presented to the controller (NodeService calls are authenticated).
    token: str = ""
    # On SIGTERM, stop every dyno before exiting (`slipway up`); by default dynos
    # outlive the agent and the next one adopts them.
    stop_dynos_on_exit: bool = False
    health_port: int = 0  # 0 = no health service
    # AttachService (slipway run) on advertise_address:attach_port; 0 = any free
    # port (the bound one is advertised in the node record). None = not served.
    attach_port: int | None = 0
    # Dyno networking (agent/network.py): "isolated" gives every dyno a network
    # namespace of its own behind the agent's firewall; "host" is the old way
    # (dynos share the host's network and can reach everything on it).
    dyno_network: str = "isolated"
    dyno_subnet: str = ""  # "": a free /24 chosen on first start and kept
    # The routers' public listeners on this host that dynos may call (HTTP/HTTPS).
    router_ports: tuple[int, ...] = ()
    # Besides this host: the addresses (CIDRs) of routers that may reach web dynos.
    router_sources: tuple[str, ...] = ()
    # Destinations no dyno may reach, besides this host and link-local (CIDRs).
    deny_cidrs: tuple[str, ...] = ()
    # The node's certificate bundle (slipway.pki, from `slipway-agent join`): its
    # identity towards etcd and NATS and the certificate of its own ports.
    credentials: Bundle | None = None

    @property
    def state_root(self) -> Path:
        return self.runc_root or self.data_dir / "runc"
