"""A whole control plane on one machine: a real controller and real agents.

etcd and nats-server come from the session fixtures; the controller and every
agent are real processes (agents run real runc containers). Each agent gets its
own node name, data dir, container prefix and port range, so several "hosts"
share this machine without colliding. Timings are shrunk so tests run in
seconds; nothing is faked.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slipway import engines
from slipway.client import Client
from slipway.cni.sandboxnet import destroy_sync
from tests.harness import secure
from tests.harness.controller import ControllerProcess

ROOT = Path(__file__).resolve().parents[2]

AGENT_TIMINGS = {
    "boot_timeout": 15,
    "stop_grace": 2,
    "up_probe_interval": 0.1,
    "memory_interval": 0.5,
    "heartbeat_interval": 1,
    "rpc_timeout": 3,
    "reconnect_initial": 0.1,
    "reconnect_max": 1,
    "restart": {"immediate": 1, "initial": 1, "cap": 4},
}
PRESENCE_TTL = 3


@dataclass
class AgentProcess:
    node: str
    data_dir: Path
    controller: ControllerProcess
    port_base: int
    container_prefix: str
    memory_mb: int = 4096
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def runc_root(self) -> Path:
        return self.data_dir / "runc"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.node}.log"

    @property
    def credentials(self) -> Path:
        return self.data_dir.parent / "credentials"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        own_credentials = "--credentials" not in self.extra_args
        # A second join re-issues the node's token, which would void one the test joined with.
        if own_credentials and not (self.credentials / "tls.crt").exists():
            self.controller.join(self.node, self.credentials)
        env = self.controller.env()
        env.pop("SLIPWAY_CREDENTIALS")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "--controllers",
                    self.controller.address,
                    "--node",
                    self.node,
                    "--data-dir",
                    str(self.data_dir),
                    "--nats",
                    self.controller.nats_url,
                    "--etcd",
                    self.controller.etcd_endpoint,
                    "--etcd-prefix",
                    self.controller.prefix,
                    "--presence-ttl",
                    str(PRESENCE_TTL),
                    "--port-range",
                    f"{self.port_base}-{self.port_base + 199}",
                    "--memory-mb",
                    str(self.memory_mb),
                    "--container-prefix",
                    self.container_prefix,
                    "--timings",
                    json.dumps(AGENT_TIMINGS),
                    *(("--credentials", str(self.credentials)) if own_credentials else ()),
                    *self.extra_args,
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def kill9(self) -> None:
        engines.kill9(self.proc)

    def stop(self) -> None:
        engines.terminate(self.proc, 10)

    def containers(self) -> list[str]:
        if not self.runc_root.exists():
            return []
        out = subprocess.run(
            ["runc", "--root", str(self.runc_root), "list", "-q"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout.split()

    def remove_containers(self) -> None:
        """The agent leaves dynos running on purpose; tests must not leak them."""
        for _ in range(50):
            ids = self.containers()
            for cid in ids:
                subprocess.run(
                    ["runc", "--root", str(self.runc_root), "delete", "-f", cid],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            shims_left = shims(self.data_dir)
            for pid in shims_left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not ids and not shims_left:
                destroy_sync(self.data_dir / "net")  # the dynos' networks
                return
            time.sleep(0.1)


def shims(data_dir: Path) -> list[int]:
    """Pids of the dyno shims an agent with ``data_dir`` started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if b"agent.shim" in cmd and str(data_dir).encode() in cmd:
            found.append(int(entry))
    return found


@dataclass
class LocalCluster:
    controller: ControllerProcess
    workdir: Path
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    def add_agent(
        self, node: str, memory_mb: int = 4096, extra_args: tuple[str, ...] = ()
    ) -> AgentProcess:
        tag = os.urandom(3).hex()
        agent = AgentProcess(
            node=node,
            data_dir=self.workdir / node / "data",
            controller=self.controller,
            port_base=random.randrange(30000, 60000, 200),
            container_prefix=f"t{tag}{node[-1]}",
            memory_mb=memory_mb,
            extra_args=extra_args,
        )
        agent.start()
        self.agents[node] = agent
        return agent

    def client(self) -> Client:
        return self.controller.client()

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for agent in self.agents.values():
            agent.remove_containers()
        self.controller.stop()


def controller_config(path: Path) -> Path:
    """Controller settings that make tests fast: quick resyncs and short TTLs."""
    path.write_text(
        "resync_seconds = 1.0\n"
        "heartbeat_seconds = 1\n"
        f"node_ttl_seconds = {PRESENCE_TTL}\n"
        "leader_ttl_seconds = 3\n"
    )
    return path


@contextlib.contextmanager
def standalone(root: Path) -> Iterator[LocalCluster]:
    """etcd, nats-server and a controller of its own, for benchmarks outside pytest."""
    etcd = secure.etcd_engine(root / "etcd")
    nats = secure.nats_engine(root / "nats")
    etcd.start()
    nats.start()
    local: LocalCluster | None = None
    try:
        prefix = f"/bench-{uuid.uuid4().hex[:8]}"
        secure.seal([f"127.0.0.1:{etcd.port}"], prefix)
        controller = ControllerProcess(
            f"127.0.0.1:{etcd.port}",
            prefix,
            root / "controller",
            f"nats://127.0.0.1:{nats.port}",
            extra_args=["--config", str(controller_config(root / "controller.toml"))],
        )
        controller.start()
        local = LocalCluster(controller, root)
        yield local
    finally:
        if local is not None:
            local.close()
        etcd.stop()
        nats.stop()
