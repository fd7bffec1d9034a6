"""A whole Slipway cluster spread over simulated hosts (see ``net.py``).

Topology, one network namespace and address per process:

    etcd-1..3   a real 3-member etcd cluster (client 2379, peer 2380)
    nats-1..3   a real nats-server JetStream cluster (client 4222, routes 6222)
    ctl-1..2    slipway-controller (API 7070; etcd leader election)
    agent-1..3  agents advertising their own address; dynos live in that namespace
    router-1..2 routers (HTTP 8080)
    builder-1..2

The test sits in the root namespace and reaches everything through the bridge.
Timings are shrunk (presence and leader TTL 3 s, resync 1 s); nothing is faked.
``close`` kills every process in every namespace, removes runc containers, the
namespaces, links and bridge; the temp dirs belong to pytest's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slipway import engines, pki
from slipway.client import Client
from slipway.keys import Keys
from tests.harness import secure
from tests.harness.cluster import AGENT_TIMINGS, PRESENCE_TTL
from tests.harness.wait import eventually
from tests.multihost.net import Host, Network
from tests.multihost.quorum import REPLICAS, EtcdCluster, NatsCluster

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFIX = "/slipway"
BASE_DOMAIN = "mh.test"
LEADER_TTL = 3
API_PORT, ROUTER_PORT = 7070, 8080
HOSTS = [
    *(f"etcd-{i}" for i in (1, 2, 3)),
    *(f"nats-{i}" for i in (1, 2, 3)),
    "ctl-1",
    "ctl-2",
    *(f"agent-{i}" for i in (1, 2, 3)),
    "router-1",
    "router-2",
    "router-3",  # spare: where a router started after a crash runs
    "builder-1",
    "builder-2",
]


@functools.cache
def _help(argv: tuple[str, ...]) -> str:
    out = subprocess.run(
        [*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    return out.stdout


def replicas_flag(argv: list[str]) -> list[str]:
    """``--nats-replicas 3`` for daemons that take it (the flag is being rolled out)."""
    return ["--nats-replicas", str(REPLICAS)] if "--nats-replicas" in _help(tuple(argv)) else []


def clean_env() -> dict[str, str]:
    """The caller's environment without SLIPWAY_* (daemons read those as flag defaults)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}


@dataclass
class Daemon:
    """One long-running process inside a host; its output goes to ``log_path``."""

    name: str
    host: Host
    argv: list[str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host.address}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.host.argv(self.argv),
                cwd=ROOT,
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if self.port:
            # Reached through the bridge: also proves the address is right.
            engines.wait_for_port(self.host.address, self.port, timeout, self.proc)

    def kill9(self) -> None:
        engines.kill9(self.proc)

    def stop(self) -> None:
        engines.terminate(self.proc, 10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class MultiHostCluster:
    workdir: Path
    net: Network = field(init=False)
    etcd: EtcdCluster = field(init=False)
    nats: NatsCluster = field(init=False)
    controllers: dict[str, Daemon] = field(default_factory=dict)
    agents: dict[str, Daemon] = field(default_factory=dict)
    routers: dict[str, Daemon] = field(default_factory=dict)
    builders: dict[str, Daemon] = field(default_factory=dict)
    token: str = ""

    def __post_init__(self) -> None:
        self.net = Network(self.workdir)

    # -- addresses -----------------------------------------------------------
    @property
    def hosts(self) -> dict[str, Host]:
        return self.net.hosts

    @property
    def etcd_endpoints(self) -> str:
        return self.etcd.endpoints

    @property
    def nats_urls(self) -> str:
        return self.nats.urls

    @property
    def state_flags(self) -> list[str]:
        """Where the cluster keeps its state: the same for every daemon that reads it."""
        return [
            "--etcd",
            self.etcd_endpoints,
            "--etcd-prefix",
            PREFIX,
            "--nats",
            self.nats_urls,
        ]

    @property
    def api(self) -> str:
        return ",".join(f"{self.hosts[n].address}:{API_PORT}" for n in self.controllers)

    def client(self) -> Client:
        return Client(self.api, self.token, timeout=10, ca_file=secure.ca_file())

    def cli_env(self, first: str = "") -> dict[str, str]:
        """The CLI's environment; ``first`` names the controller it tries first."""
        api = [f"{self.hosts[n].address}:{API_PORT}" for n in self.controllers if n != first]
        if first:
            api.insert(0, f"{self.hosts[first].address}:{API_PORT}")
        env = clean_env()
        env.update(
            SLIPWAY_API=",".join(api),
            SLIPWAY_TOKEN=self.token,
            SLIPWAY_CONFIG=str(self.workdir / "cli.json"),
            SLIPWAY_CA_FILE=str(secure.ca_file()),
        )
        return env

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``slipway ARGS`` as a user on the test's own host would run it."""
        result = subprocess.run(
            [str(BIN / "slipway"), *args],
            env=self.cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"slipway {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    # -- bring-up ------------------------------------------------------------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.net.create(HOSTS)
        self.etcd = EtcdCluster([self.hosts[f"etcd-{i}"] for i in (1, 2, 3)], self.workdir)
        self.etcd.start()
        secure.seal(self.etcd_endpoints.split(","), PREFIX)
        self.nats = NatsCluster([self.hosts[f"nats-{i}"] for i in (1, 2, 3)], self.workdir)
        self.nats.start()
        self.token = self._create_token()
        for name in ("ctl-1", "ctl-2"):
            self.start_controller(name)
        for i in (1, 2, 3):
            self.start_agent(f"agent-{i}")
        for name in ("router-1", "router-2"):
            self.start_router(name)
        for name in ("builder-1", "builder-2"):
            self.start_builder(name)
        with self.client() as client:
            eventually(lambda: len(client.list_nodes().nodes) == 3, 60, 0.2)

    def _operator(self, *args: str) -> str:
        """``slipway-controller ARGS`` as an operator (root) on the test's host."""
        out = subprocess.run(
            [
                str(BIN / "slipway-controller"),
                *args,
                "--etcd",
                self.etcd_endpoints,
                "--etcd-prefix",
                PREFIX,
                *secure.flags(pki.Role.ROOT),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip()

    def _create_token(self) -> str:
        return self._operator("tokens", "create", "--name", "multihost")

    def _join(self, name: str, host: Host) -> Path:
        """A new host joins: a one-time token from the operator, then `slipway-agent join`."""
        out = self.workdir / f"{name}-credentials"
        token = self._operator("nodes", "join-token", name)
        return secure.agent_join(self.api.split(",")[0], token, out, host.address, clean_env())

    def _creds(self, role: pki.Role, host: Host) -> list[str]:
        return ["--credentials", str(secure.bundle(role, hosts=(host.address,)).path)]

    def start_controller(self, name: str) -> Daemon:
        config = self.workdir / f"{name}.toml"
        config.write_text(
            f'identity = "{name}"\n'
            f"leader_ttl_seconds = {LEADER_TTL}\n"
            "resync_seconds = 1.0\n"
            "heartbeat_seconds = 1\n"
            f"node_ttl_seconds = {PRESENCE_TTL}\n"
        )
        host = self.hosts[name]
        daemon = Daemon(
            name,
            host,
            [
                str(BIN / "slipway-controller"),
                "serve",
                "--config",
                str(config),
                "--listen",
                f"{host.address}:{API_PORT}",
                *self.state_flags,
                "--base-domain",
                BASE_DOMAIN,
                *replicas_flag([str(BIN / "slipway-controller"), "serve"]),
                *self._creds(pki.Role.CONTROLLER, host),
                "--ca-dir",
                str(secure.session().ca_dir),
            ],
            self.workdir / f"{name}.log",
            port=API_PORT,
        )
        daemon.start()
        self.controllers[name] = daemon
        return daemon

    def start_agent(self, name: str) -> Daemon:
        host = self.hosts[name]
        data = self.workdir / name
        credentials = self.workdir / f"{name}-credentials"
        if not (credentials / "tls.crt").exists():
            self._join(name, host)
        daemon = Daemon(
            name,
            host,
            [
                sys.executable,
                "-m",
                "agent",
                "--controllers",
                self.api,
                "--node",
                name,
                "--advertise-address",
                host.address,
                "--data-dir",
                str(data),
                *self.state_flags,
                "--credentials",
                str(credentials),
                "--presence-ttl",
                str(PRESENCE_TTL),
                "--port-range",
                "20000-20199",
                "--memory-mb",
                "4096",
                # runc derives cgroup paths from container ids: unique per run and agent.
                "--container-prefix",
                f"mh{self.net.tag}{name[-1]}",
                "--timings",
                json.dumps(AGENT_TIMINGS),
                # Routers on the other hosts reach web dynos through the host port mapping.
                "--router-sources",
                f"{self.net.subnet}.0/24",
                *replicas_flag([sys.executable, "-m", "agent"]),
            ],
            self.workdir / f"{name}.log",
        )
        daemon.start()
        self.agents[name] = daemon
        return daemon

    def start_router(self, name: str) -> Daemon:
        host = self.hosts[name]
        daemon = Daemon(
            name,
            host,
            [
                sys.executable,
                "-m",
                "router",
                "--listen",
                f"{host.address}:{ROUTER_PORT}",
                *self.state_flags,
                "--base-domain",
                BASE_DOMAIN,
                *replicas_flag([sys.executable, "-m", "router"]),
                *self._creds(pki.Role.ROUTER, host),
            ],
            self.workdir / f"{name}.log",
            port=ROUTER_PORT,
        )
        daemon.start()
        self.routers[name] = daemon
        return daemon

    def start_builder(self, name: str) -> Daemon:
        daemon = Daemon(
            name,
            self.hosts[name],
            [
                sys.executable,
                "-m",
                "builder",
                "--nats",
                self.nats_urls,
                "--data-dir",
                str(self.workdir / name),
                "--name",
                name,
                # A job held by a dead builder comes back after 3 s, not 30.
                "--ack-wait",
                "3",
                "--build-timeout",
                "120",
                *replicas_flag([sys.executable, "-m", "builder"]),
                *self._creds(pki.Role.BUILDER, self.hosts[name]),
            ],
            self.workdir / f"{name}.log",
        )
        daemon.start()
        self.builders[name] = daemon
        return daemon

    # -- state the tests read ----------------------------------------------------
    def leader(self) -> str:
        """The controller identity in the etcd leader key ("" while there is none)."""

        async def read() -> str:
            async with secure.root_etcd(self.etcd_endpoints.split(",")) as etcd:
                kv = await etcd.get(Keys(PREFIX).leader())
                return kv.value.decode() if kv else ""

        return asyncio.run(read())

    def running_containers(self, agent: str) -> list[str]:
        """Ids of the runc containers running on an agent's host (its dynos)."""
        out = subprocess.run(
            ["runc", "--root", str(self.workdir / agent / "runc"), "list", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        return [c["id"] for c in json.loads(out or "null") or [] if c["status"] == "running"]

    # -- teardown ------------------------------------------------------------------
    def close(self) -> None:
        """Kill everything (also after a failed test), then remove containers and hosts."""
        self.net.close()
