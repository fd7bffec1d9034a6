"""``slipway up``: the whole platform on one host, supervised together.

Starts etcd and nats-server (embedded: child processes with data under the
Slipway data directory), then a controller, the built-in add-ons (PostgreSQL,
registered as the ``postgresql`` service), an agent, a router and a builder.
A component that exits is reported and restarted with a growing delay. SIGTERM
or Ctrl-C stops everything in reverse order. All state lives in the data
directory, so running ``slipway up`` again keeps apps, releases and config.

Sealed from the first start: a cluster CA is made in ``DATA/pki`` and every
engine and daemon gets a certificate of its own (``DATA/pki/ROLE``). etcd
requires client certificates and has RBAC on, NATS requires them and maps each
to a user with narrow permissions, the API is on TLS, and the agent joins with
a one-time token as an agent on another host would.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from slipway import engines, errors, etcdauth, pki, stackimage
from slipway.backoff import Backoff
from slipway.etcd import Etcd
from slipway.keys import DEFAULT_PREFIX

PACKAGES = {
    "etcd": "etcd-server",
    "nats-server": "nats-server",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "redis-server": "redis-server",
}
BUILT_IN_SERVICES = ("postgresql", "redis")


@dataclass(frozen=True)
class UpConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    api_port: int = 7070
    router_listen: str = "0.0.0.0:8080"
    router_tls_listen: str = "0.0.0.0:8443"
    etcd_port: int = 2379
    etcd_peer_port: int = 2380
    nats_port: int = 4222
    base_domain: str = "localhost"
    node: str = field(default_factory=socket.gethostname)
    addons_port: int = 5480
    # The Heroku Platform API (v3) on the controller, HTTPS.
    platform_api_port: int = 5443
    # The controller's HTTPS API providers call back to after a 202: a fixed
    # port, so the callback URL a provider was given still answers after a restart.
    callback_port: int = 5481
    postgres_port: int = 5433
    # One port per Redis add-on, from this range (LOW-HIGH).
    redis_ports: str = "6380-6479"
    # Where PostgreSQL keeps its data: it runs as the postgres user, so the
    # path must be searchable by it (the default data dir, ~/.slipway, is not).
    addons_dir_option: Path | None = None
    # The address dynos dial for their databases ("": the default route's).
    addons_address: str = ""

    @property
    def addons_dir(self) -> Path:
        if self.addons_dir_option is not None:
            return self.addons_dir_option
        if searchable_by_others(self.data_dir):
            return self.data_dir / "addons"
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/var/lib/slipway") / f"addons-{digest}"

    @property
    def addons_manifests(self) -> list[Path]:
        """What the add-ons daemon writes for the operator to register, per service."""
        return [self.addons_dir / "manifests" / f"{s}.json" for s in BUILT_IN_SERVICES]

    @property
    def api(self) -> str:
        return f"{self.host}:{self.api_port}"

    @property
    def etcd_endpoint(self) -> str:
        return f"{self.host}:{self.etcd_port}"

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.nats_port}"

    @property
    def router_port(self) -> int:
        return int(self.router_listen.rpartition(":")[2])

    @property
    def router_tls_port(self) -> int:
        return int(self.router_tls_listen.rpartition(":")[2])

    @property
    def edge_dir(self) -> Path:
        """The router's default HTTPS certificate (tls.crt, tls.key)."""
        return self.pki_dir / "edge"

    @property
    def web_url(self) -> str:
        """An app's URL through this host's router, its port included."""
        port = "" if self.router_port == 80 else f":{self.router_port}"
        return "http://{app}." + self.base_domain + port + "/"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    def bundle(self, role: pki.Role) -> pki.Bundle:
        return pki.Bundle(self.pki_dir / role.value)

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca" / "ca.crt"


def searchable_by_others(path: Path) -> bool:
    """Every existing parent of ``path`` lets other users through (o+x)."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents] if p.exists())


def ensure_pki(cfg: UpConfig, say: Callable[[str], None]) -> None:
    """The cluster CA and the bundles of every component but the node (which
    joins), made on the first start and kept."""
    ca_dir = cfg.pki_dir / "ca"
    if (ca_dir / "ca.key").exists():
        ca = pki.load_ca(ca_dir)
    else:
        say(f"-----> Creating the cluster CA in {ca_dir}")
        ca = pki.init_ca(ca_dir)
    for role in (
        pki.Role.ENGINE,
        pki.Role.CONTROLLER,
        pki.Role.ROUTER,
        pki.Role.BUILDER,
        pki.Role.ROOT,
    ):
        if not cfg.bundle(role).exists():
            pki.issue(ca, cfg.bundle(role).path, role, hosts=[cfg.host])
        elif role in pki.CLUSTER_KEY_ROLES:
            pki.give_cluster_key(ca, cfg.bundle(role))  # a data dir from before the key
    # The add-ons' certificate also names the address dynos dial (PostgreSQL's
    # TLS): made again when that address changes.
    hosts = sorted({cfg.host, cfg.addons_address} - {""})
    # The routers' default HTTPS certificate: BASE_DOMAIN and *.BASE_DOMAIN (a
    # wildcard clients refuse for a one-label domain such as localhost: there
    # each app gets its own from the controller, --app-certificates-from-ca).
    edge = cfg.edge_dir
    if not (edge / "tls.key").exists():
        chain, key = pki.edge_certificate(ca, [cfg.base_domain, f"*.{cfg.base_domain}"])
        edge.mkdir(parents=True, exist_ok=True)
        (edge / "tls.crt").write_bytes(chain)
        pki.write_private(edge / "tls.key", key)
    names = cfg.pki_dir / "addons-hosts"
    bundle = cfg.bundle(pki.Role.ADDONS)
    if not bundle.exists() or not names.exists() or names.read_text().split() != hosts:
        pki.issue(ca, bundle.path, pki.Role.ADDONS, hosts=hosts)
        names.write_text(" ".join(hosts) + "\n")


async def seal_etcd(cfg: UpConfig) -> None:
    async with Etcd([cfg.etcd_endpoint], credentials=cfg.bundle(pki.Role.ROOT)) as etcd:
        await etcdauth.seal(etcd, DEFAULT_PREFIX)


def missing_packages() -> list[str]:
    from slipway.providers.postgres import find_bin_dir

    missing = []
    for binary, package in PACKAGES.items():
        try:
            engines.find_binary(binary)
        except errors.FailedPrecondition:
            missing.append(package)
    try:
        find_bin_dir()
    except errors.FailedPrecondition:
        missing.append("postgresql")
    return missing


def ensure_stack_images(say: Callable[[str], None]) -> None:
    """The default stack's run and build images, built once per host (minutes)."""
    store = stackimage.ImageStore()
    for flavour in stackimage.FLAVOURS:
        wanted = stackimage.recipe(stackimage.DEFAULT_STACK, flavour)
        store.ensure(wanted, progress=lambda line: say(f"-----> {line}"))


def install(packages: list[str], say: Callable[[str], None]) -> None:
    if not packages:
        return
    if os.geteuid() != 0:
        raise errors.FailedPrecondition(
            f"missing {', '.join(packages)}; run as root, "
            f"or install them first: sudo apt-get install {' '.join(packages)}"
        )
    say(f"-----> Installing {', '.join(packages)} with apt")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )
    for service in ("etcd", "nats-server", "postgresql", "redis-server"):
        # Debian starts the packaged daemons on the default ports; we run our own.
        subprocess.run(
            ["systemctl", "disable", "--now", service],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    ready_port: tuple[str, int] | None = None
    env: dict[str, str] | None = None
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *engines.dying_with_parent(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        if self.ready_port is None:
            return
        host, port = self.ready_port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise errors.Unavailable(
                    f"{self.name} exited with status {self.proc.returncode} while starting; "
                    f"see {self.log_path}"
                )
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
                writer.close()
                return
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
        raise errors.Unavailable(
            f"{self.name} did not listen on {host}:{port}; see {self.log_path}"
        )

    async def stop(self, grace: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _creds(cfg: UpConfig, role: pki.Role) -> list[str]:
    return ["--credentials", str(cfg.bundle(role).path)]


def components(cfg: UpConfig) -> list[Component]:
    data = cfg.data_dir
    logs = data / "logs"
    engine = cfg.bundle(pki.Role.ENGINE)
    etcd = engines.etcd(
        data / "etcd",
        host=cfg.host,
        client_port=cfg.etcd_port,
        peer_port=cfg.etcd_peer_port,
        tls=engine,
    )
    nats = engines.nats(data / "nats", host=cfg.host, port=cfg.nats_port, tls=engine)
    env = {k: v for k, v in os.environ.items() if k not in ("SLIPWAY_CREDENTIALS", "SLIPWAY_TOKEN")}
    env["SLIPWAY_LOG_LEVEL"] = os.environ.get("SLIPWAY_LOG_LEVEL", "info")
    router_host = cfg.router_listen.rpartition(":")[0]
    router_probe = cfg.host if router_host in ("0.0.0.0", "") else router_host
    addons = _py(
        "slipway.providers",
        "serve",
        "--data-dir",
        str(cfg.addons_dir),
        "--listen",
        f"{cfg.host}:{cfg.addons_port}",
        "--postgres-port",
        str(cfg.postgres_port),
        "--redis-ports",
        cfg.redis_ports,
        "--nats",
        cfg.nats_url,
        *_creds(cfg, pki.Role.ADDONS),
    )
    if cfg.addons_address:
        addons += ["--advertise-address", cfg.addons_address]
    return [
        Component("etcd", etcd.argv, logs / "etcd.log", (cfg.host, cfg.etcd_port)),
        Component("nats", nats.argv, logs / "nats.log", (cfg.host, cfg.nats_port)),
        Component(
            "controller",
            _py(
                "controller",
                "serve",
                "--listen",
                cfg.api,
                "--etcd",
                cfg.etcd_endpoint,
                "--nats",
                cfg.nats_url,
                "--base-domain",
                cfg.base_domain,
                "--web-url",
                cfg.web_url,
                "--app-certificates-from-ca",
                *_creds(cfg, pki.Role.CONTROLLER),
                "--addons-listen",
                f"{cfg.host}:{cfg.callback_port}",
                "--platform-api-listen",
                f"{cfg.host}:{cfg.platform_api_port}",
                "--ca-dir",
                str(cfg.pki_dir / "ca"),
            ),
            logs / "controller.log",
            (cfg.host, cfg.api_port),
            env,
        ),
        Component("addons", addons, logs / "addons.log", (cfg.host, cfg.addons_port), env),
        Component(
            "agent",
            _py(
                "agent",
                "--controllers",
                cfg.api,
                "--node",
                cfg.node,
                "--advertise-address",
                cfg.host,
                "--data-dir",
                str(data / "agent"),
                "--nats",
                cfg.nats_url,
                "--etcd",
                cfg.etcd_endpoint,
                "--stop-dynos-on-exit",
                # Dynos may call the router's public listener (apps call each other by URL).
                "--router-ports",
                f"{cfg.router_port},{cfg.router_tls_port}",
                "--credentials",
                str(cfg.pki_dir / "node"),
            ),
            logs / "agent.log",
            None,
            env,
        ),
        Component(
            "builder",
            _py(
                "builder",
                "--nats",
                cfg.nats_url,
                "--data-dir",
                str(data / "builder"),
                "--name",
                f"{cfg.node}-builder",
                *_creds(cfg, pki.Role.BUILDER),
            ),
            logs / "builder.log",
            None,
            env,
        ),
        Component(
            "router",
            _py(
                "router",
                "--listen",
                cfg.router_listen,
                "--listen-tls",
                cfg.router_tls_listen,
                "--tls-cert",
                str(cfg.edge_dir / "tls.crt"),
                "--tls-key",
                str(cfg.edge_dir / "tls.key"),
                "--etcd",
                cfg.etcd_endpoint,
                "--nats",
                cfg.nats_url,
                "--base-domain",
                cfg.base_domain,
                *_creds(cfg, pki.Role.ROUTER),
            ),
            logs / "router.log",
            (router_probe, cfg.router_port),
            env,
        ),
    ]


def _run(argv: list[str], failure: str) -> str:
    """Run one of Slipway's own commands to completion; its output, or Unavailable."""
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if out.returncode != 0:
        raise errors.Unavailable(f"{failure}: {out.stderr.strip()}")
    return out.stdout.strip()


def _admin(cfg: UpConfig, *args: str) -> str:
    """Run an operator command of ``slipway-controller`` as root; its output."""
    argv = _py("controller", *args, "--etcd", cfg.etcd_endpoint, *_creds(cfg, pki.Role.ROOT))
    return _run(argv, f"slipway-controller {args[0]} failed")


def ensure_token(cfg: UpConfig) -> str:
    """The platform's admin token, made once and kept (0600) in the data dir."""
    path = cfg.data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = _admin(cfg, "tokens", "create", "--name", "admin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def ensure_node(cfg: UpConfig) -> None:
    """This host's agent joins as any other host's would: a one-time token."""
    node_dir = cfg.pki_dir / "node"
    if pki.Bundle(node_dir).exists() and (node_dir / "node-token").exists():
        return
    join_token = _admin(cfg, "nodes", "join-token", cfg.node)
    argv = _py("agent", "join", "--controller", cfg.api, "--ca-file", str(cfg.ca_file))
    argv += ["--token", join_token, "--credentials", str(node_dir)]
    _run([*argv, "--advertise-address", cfg.host], "the agent could not join")


def register_addons(cfg: UpConfig, timeout: float = 30.0) -> None:
    """Register (or update) the built-in services (PostgreSQL, Redis) from the
    manifests the add-ons daemon writes once it serves."""
    deadline = time.monotonic() + timeout
    for path in cfg.addons_manifests:
        while not path.exists():
            if time.monotonic() > deadline:
                raise errors.Unavailable(
                    f"the add-ons wrote no manifest at {path}; "
                    f"see {cfg.data_dir / 'logs' / 'addons.log'}"
                )
            time.sleep(0.1)
        _admin(cfg, "addons:register", str(path))


class Platform:
    def __init__(self, cfg: UpConfig, say: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.say = say
        self.components: list[Component] = []
        self.stopping = False

    async def run(self, on_ready: Callable[[str], None]) -> None:
        cfg = self.cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        for port, what in (
            (cfg.api_port, "API"),
            (cfg.etcd_port, "etcd"),
            (cfg.nats_port, "NATS"),
            (cfg.router_port, "router"),
            (cfg.router_tls_port, "router HTTPS"),
            (cfg.addons_port, "add-ons API"),
            (cfg.callback_port, "add-on callback API"),
            (cfg.postgres_port, "PostgreSQL"),
        ):
            anywhere = what in ("router", "router HTTPS", "PostgreSQL")
            _check_free("0.0.0.0" if anywhere else cfg.host, port, what)
        await asyncio.to_thread(ensure_pki, cfg, self.say)
        self.components = components(cfg)
        try:
            etcd, nats, controller, addons, *rest = self.components
            await self._start(etcd)
            await seal_etcd(cfg)
            await self._start(nats)
            await self._start(controller)
            token = await asyncio.to_thread(ensure_token, cfg)
            await self._start(addons)
            await asyncio.to_thread(register_addons, cfg)
            # The agent joins through the controller, so it starts after it.
            await asyncio.to_thread(ensure_node, cfg)
            for comp in rest:
                await self._start(comp)
            on_ready(token)
            async with asyncio.TaskGroup() as tg:
                for comp in self.components:
                    tg.create_task(self._supervise(comp))
        finally:
            self.stopping = True
            await self.stop()

    async def _start(self, comp: Component) -> None:
        self.say(f"-----> Starting {comp.name}")
        await comp.start()
        await comp.wait_ready()

    async def _supervise(self, comp: Component) -> None:
        backoff = Backoff(initial=1.0, maximum=30.0)
        while True:
            assert comp.proc is not None
            status = await comp.proc.wait()
            if self.stopping:
                return
            comp.restarts += 1
            delay = backoff.next()
            self.say(
                f"!      {comp.name} exited with status {status}; restarting in {delay:.0f}s "
                f"(restart #{comp.restarts}; log: {comp.log_path})"
            )
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await comp.start()
                await comp.wait_ready()
            except errors.SlipwayError as exc:
                self.say(f"!      {comp.name} failed to restart: {exc}")
                continue
            self.say(f"-----> {comp.name} is back")
            if time.monotonic() - started > 60:
                backoff.reset()

    async def stop(self) -> None:
        for comp in reversed(self.components):
            if comp.proc is not None and comp.proc.returncode is None:
                self.say(f"-----> Stopping {comp.name}")
                await comp.stop(grace=40.0 if comp.name in ("agent", "builder") else 10.0)


def _check_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise errors.FailedPrecondition(
                f"port {port} for the {what} is in use ({exc.strerror}); is Slipway already up? "
                f"Pick another with the port flags (slipway up --help)"
            ) from exc


async def serve(cfg: UpConfig, say: Callable[[str], None], on_ready: Callable[[str], None]) -> None:
    platform = Platform(cfg, say)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            say("!      second signal: killing everything")
            for comp in platform.components:
                if comp.proc is not None and comp.proc.returncode is None:
                    comp.proc.kill()
            os._exit(1)
        say("-----> Stopping Slipway (Ctrl-C again to force)")
        platform.stopping = True
        if task is not None:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await platform.run(on_ready)
    except asyncio.CancelledError:
        if not platform.stopping:
            raise
