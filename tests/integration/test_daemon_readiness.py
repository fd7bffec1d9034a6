"""systemd readiness: each daemon, started from a config file with NOTIFY_SOCKET set,
sends READY=1 once it really serves and STOPPING=1 on SIGTERM.

The test plays systemd: a datagram socket in a temp dir receives the messages.
Daemons run against the session's real etcd and nats-server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import engines, pki
from tests.harness import secure

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Notifications:
    """A stand-in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float) -> str:
        """The first message holding ``field`` (e.g. READY=1), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if field in message.split("\n"):
                return message
        raise AssertionError(f"no {field} within {timeout}s; got {self.messages}")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notifications]:
    # AF_UNIX paths are limited to 107 bytes: keep it short, not under tmp_path.
    path = Path("/tmp") / f"slipway-notify-{uuid.uuid4().hex[:8]}.sock"
    n = Notifications(path)
    try:
        yield n
    finally:
        n.sock.close()
        path.unlink(missing_ok=True)


def start(argv: list[str], notify: Notifications, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
    env["NOTIFY_SOCKET"] = str(notify.path)
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], notify: Notifications, log: Path) -> None:
    """SIGTERM: the daemon says STOPPING=1 and exits."""
    try:
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 10)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode is not None, log.read_text()


def connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_controller_ready_once_listening(
    notify: Notifications, etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> None:
    port = engines.free_port()
    config = tmp_path / "controller.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'etcd = ["{etcd_endpoint}"]\n'
        f'etcd_prefix = "{etcd_prefix}"\n'
        f'nats = ["{nats_url}"]\n'
        "nats_replicas = 1\n"
        "resync_seconds = 1.0\n"
        f'credentials = "{secure.bundle(pki.Role.CONTROLLER).path}"\n'
    )
    log = tmp_path / "controller.log"
    binary = str(Path(sys.executable).parent / "slipway-controller")
    proc = start([binary, "serve", "--config", str(config)], notify, log)
    try:
        message = notify.wait_for("READY=1", 30)
        assert f"127.0.0.1:{port}" in message
        assert connects(port), "READY=1 came before the API listened"
    finally:
        stop(proc, notify, log)


@pytest.mark.parametrize("workers", [1, 2])
def test_router_ready_once_listening(
    notify: Notifications, etcd_endpoint: str, etcd_prefix: str, tmp_path: Path, workers: int
) -> None:
    port = engines.free_port()
    config = tmp_path / "router.toml"
    config.write_text(
        f'listen = ["127.0.0.1:{port}"]\n'
        f"workers = {workers}\n"
        f'etcd = "{etcd_endpoint}"\n'
        f'etcd_prefix = "{etcd_prefix}"\n'
        'base_domain = "apps.test"\n'
        f'credentials = "{secure.bundle(pki.Role.ROUTER).path}"\n'
    )
    log = tmp_path / "router.log"
    proc = start([sys.executable, "-m", "router", "--config", str(config)], notify, log)
    try:
        notify.wait_for("READY=1", 20)
        assert connects(port), "READY=1 came before the router listened"
    finally:
        stop(proc, notify, log)
    # Forked workers never talk to systemd themselves: exactly one READY. Every
    # worker listened before the parent's READY and STOPPING=1 came after it, so
    # a worker's own READY would be among the messages received by now.
    readies = [m for m in notify.messages if "READY=1" in m.split("\n")]
    assert len(readies) == 1, notify.messages


def test_builder_ready_once_consumer_bound(
    notify: Notifications, nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "builder.toml"
    config.write_text(
        f'nats = "{nats_url}"\n'
        f'data_dir = "{tmp_path / "builder"}"\n'
        'name = "ready-test"\n'
        "slots = 1\n"
        f'credentials = "{secure.bundle(pki.Role.BUILDER).path}"\n'
    )
    log = tmp_path / "builder.log"
    proc = start([sys.executable, "-m", "builder", "--config", str(config)], notify, log)
    try:
        notify.wait_for("READY=1", 120)
        assert proc.poll() is None, log.read_text()
    finally:
        stop(proc, notify, log)
    assert "draining" in log.read_text()


def test_agent_ready_once_registered(
    notify: Notifications, etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> None:
    """No controller at all: adoption plus etcd presence are enough."""
    config = tmp_path / "agent.toml"
    config.write_text(
        'controllers = ""\n'
        'node = "ready-node"\n'
        'advertise_address = "127.0.0.1"\n'
        f'data_dir = "{tmp_path / "agent"}"\n'
        f'nats = "{nats_url}"\n'
        f'etcd = "{etcd_endpoint}"\n'
        f'etcd_prefix = "{etcd_prefix}"\n'
        "memory_mb = 1024\n"
        f'container_prefix = "rdy{uuid.uuid4().hex[:6]}"\n'
        "timings = { ready_wait = 20 }\n"
        f'credentials = "{secure.bundle(pki.Role.NODE, "ready-node").path}"\n'
    )
    secure.admit_node([etcd_endpoint], etcd_prefix, "ready-node")
    log = tmp_path / "agent.log"
    proc = start([sys.executable, "-m", "agent", "--config", str(config)], notify, log)
    try:
        message = notify.wait_for("READY=1", 30)
        assert "node registered" in message, message
    finally:
        stop(proc, notify, log)
