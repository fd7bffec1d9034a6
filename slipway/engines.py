"""Start the real engines (etcd, nats-server with JetStream) as child processes.

Used by ``slipway up`` to embed them and by the test harness to run them on free
ports in temp dirs. Each engine is started, waited on until it answers, and
stopped with terminate -> wait -> kill.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from slipway import errors, natsauth, pki
from slipway.pki import Bundle


def dying_with_parent(argv: list[str]) -> list[str]:
    """``argv`` behind ``setpriv --pdeathsig TERM``: the child gets SIGTERM when
    its parent dies, so a killed test run or `slipway up` leaves no engine behind.

    setpriv sets the signal in C between its own start and the exec. The old way,
    a ``preexec_fn`` calling prctl through ctypes, ran Python in the forked child
    of a threaded process, which can deadlock or crash (it segfaulted once in CI).
    """
    return [find_binary("setpriv"), "--pdeathsig", "TERM", "--", *argv]


def find_binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise errors.FailedPrecondition(
        f"{name} is not installed; run `make setup` (installs it with apt)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise errors.Unavailable(
                f"process exited with status {proc.returncode} before listening"
            )
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise errors.Unavailable(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def terminate(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, grace: float = 5.0
) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL: how every child is stopped."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def kill9(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None) -> None:
    """kill -9 and reap, for fault tests."""
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


@dataclass
class Engine:
    """One child process with its log file."""

    name: str
    argv: list[str]
    data_dir: Path
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"{self.name}.log"

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                dying_with_parent(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
        except errors.SlipwayError as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise errors.Unavailable(f"{self.name} did not start: {exc}\n{tail}") from exc

    def stop(self, grace: float = 5.0) -> None:
        terminate(self.proc, grace)

    def kill(self) -> None:
        """kill -9, for fault tests."""
        kill9(self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def etcd(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    client_port: int | None = None,
    peer_port: int | None = None,
    name: str = "slipway",
    initial_cluster: str | None = None,
    cluster_state: str = "new",
    tls: pki.Bundle | None = None,
) -> Engine:
    """One etcd member. ``tls``: an ENGINE bundle whose certificate names ``host``;
    clients and peers then speak TLS and must present a certificate of the same
    CA (a client's CN is its etcd user). ``initial_cluster`` lists the members as
    ``name=http://host:port,...``; with ``tls`` its URLs are made https."""
    client_port = client_port or free_port(host)
    peer_port = peer_port or free_port(host)
    scheme = "https" if tls else "http"
    peer_url = f"{scheme}://{host}:{peer_port}"
    client_url = f"{scheme}://{host}:{client_port}"
    cluster = initial_cluster or f"{name}={peer_url}"
    if tls:
        cluster = cluster.replace("=http://", "=https://")
    argv = [
        find_binary("etcd"),
        "--name",
        name,
        "--data-dir",
        str(data_dir / "etcd-data"),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        cluster,
        "--initial-cluster-state",
        cluster_state,
        "--initial-cluster-token",
        "slipway",
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "1000",
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "10000",
        "--quota-backend-bytes",
        str(2 * 1024**3),
        "--logger",
        "zap",
        "--log-level",
        "warn",
    ]
    if tls:
        argv += etcd_tls_flags(tls, members=cluster.count("="))
    return Engine("etcd", argv, data_dir, host, client_port)


def etcd_tls_flags(bundle: pki.Bundle, *, members: int = 1) -> list[str]:
    """etcd's flags for TLS with client certificates, towards clients and peers.

    A member of several must also be named :data:`slipway.etcd.CLUSTER_NAME`
    by its certificate: clients of the cluster check every member against it.
    """
    from slipway.etcd import CLUSTER_NAME

    bundle.check()
    if members > 1 and CLUSTER_NAME not in pki.dns_names(bundle.certificate()):
        raise errors.FailedPrecondition(
            f"the certificate in {bundle.path} does not name {CLUSTER_NAME}: each member of "
            f"an etcd cluster needs it (issue it with hosts=(ADDRESS, {CLUSTER_NAME!r}))",
            reason="bad_certificate",
        )
    ca, cert, key = str(bundle.ca_file), str(bundle.cert_file), str(bundle.key_file)
    return [
        "--client-cert-auth",
        "--trusted-ca-file",
        ca,
        "--cert-file",
        cert,
        "--key-file",
        key,
        "--peer-client-cert-auth",
        "--peer-trusted-ca-file",
        ca,
        "--peer-cert-file",
        cert,
        "--peer-key-file",
        key,
    ]


def nats(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    cluster_port: int | None = None,
    routes: list[str] | None = None,
    server_name: str = "slipway",
    cluster_name: str = "slipway",
    max_store_bytes: int = 0,
    tls: Bundle | None = None,
) -> Engine:
    """``max_store_bytes``: cap JetStream's file storage (0: the disk's size), as
    a full disk would; nats-server takes the cap only from a config file.

    ``tls`` (an ENGINE bundle): clients must present a certificate of the bundle's
    CA, which names their NATS user (:mod:`slipway.natsauth`: one per role, no
    anonymous access), and routes between servers are on TLS too. The config
    goes to ``DATA/nats.conf``. No monitoring port is opened either way."""
    port = port or free_port(host)
    store = data_dir / "jetstream"
    argv = [find_binary("nats-server")]
    cluster = None
    if tls is not None and cluster_port:
        cluster = natsauth.Cluster(cluster_name, host, cluster_port, tuple(routes or ()))
    text = natsauth.server_config(tls=tls, cluster=cluster, max_store_bytes=max_store_bytes)
    if text:
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "nats.conf"
        config.write_text(text)
        argv += ["--config", str(config)]
    argv += [
        "--addr",
        host,
        "--port",
        str(port),
        "--jetstream",
        "--store_dir",
        str(store),
        "--server_name",
        server_name,
    ]
    if cluster_port and cluster is None:
        argv += ["--cluster", f"nats://{host}:{cluster_port}", "--cluster_name", cluster_name]
        if routes:
            argv += ["--routes", ",".join(routes)]
    return Engine("nats", argv, data_dir, host, port)
