"""The built-in Redis provider: one redis-server per add-on.

Why a server per add-on rather than ACL users with key patterns on a shared
one: ``maxmemory`` and the eviction policy, the two things a Redis plan is
made of, are settings of a whole server, and one app's ``KEYS *`` or Lua
script blocks every client of a single-threaded server. A redis-server costs
about 3 MB and starts in milliseconds, so the price of its own is small.

What each server is:

- TLS only (``port 0``; ``tls-port`` on the advertised address, the addons
  bundle's certificate); clients are not asked for certificates;
- the ``default`` user (the URL's password, stored here as its SHA-256 only)
  has every command but the ``@admin`` ones (CONFIG, SHUTDOWN, DEBUG,
  REPLICAOF, ACL SETUSER, ...): the plan's limits are not the app's to lift;
- an admin user on a unix socket only root and redis can open: what this
  provider speaks to change plans, rotate the password and read INFO;
- the plan's ``maxmemory`` and ``maxclients`` (plus two for the admin), the
  policy ``noeviction`` unless the add-on chose another; append-only file
  (fsync every second), so a restart keeps the data;
- on the network, only the dynos of attached apps reach its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import shutil
import signal
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from slipway import engines, errors, pki
from slipway import log as slog
from slipway.backoff import Backoff
from slipway.providers.partner import Outcome, PlanSpec
from slipway.providers.resources import PROVISIONED, Resource, ResourceStore
from slipway.providers.runas import RunAs, check_reachable, spawn_logged, stop_process

log = slog.get("addons.redis")

SERVICE = "redis"
PREFIX = "REDIS"
MB = 1024 * 1024
ADMIN_USER = "slipway-admin"
ADMIN_HEADROOM = 2  # connections above the plan's, kept for this provider
CALL_TIMEOUT = 10.0
START_TIMEOUT = 20.0
# Heroku Redis's plans, by their limits.
PLANS = (
    PlanSpec(
        "mini", "25 MB, 20 connections", {"memory_bytes": 25 * MB, "connections": 20}, default=True
    ),
    PlanSpec("premium-0", "50 MB, 40 connections", {"memory_bytes": 50 * MB, "connections": 40}),
    PlanSpec("premium-1", "100 MB, 80 connections", {"memory_bytes": 100 * MB, "connections": 80}),
    PlanSpec(
        "premium-2", "250 MB, 200 connections", {"memory_bytes": 250 * MB, "connections": 200}
    ),
)
POLICIES = (
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)
DEFAULT_POLICY = "noeviction"


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise errors.InvalidArgument(
            f"{policy!r} is not a maxmemory policy; choose one of {', '.join(POLICIES)}"
        )
    return policy


def password_hash(password: str) -> str:
    """How an ACL user's password is written in the config: ``#`` and its SHA-256."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def choose_port(used: Iterable[int], ports: tuple[int, int], free: Callable[[int], bool]) -> int:
    """Pure but for ``free``: the lowest port of the range no add-on has and nothing holds."""
    taken = set(used)
    for port in range(ports[0], ports[1] + 1):
        if port not in taken and free(port):
            return port
    raise errors.ResourceExhausted(
        f"every redis port in {ports[0]}-{ports[1]} is in use; widen --redis-ports"
    )


def port_is_free(address: str) -> Callable[[int], bool]:
    def check(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return False
        return True

    return check


def plan_limits(plan: PlanSpec) -> tuple[int, int]:
    return int(plan.limits["memory_bytes"]), int(plan.limits["connections"])


def config_text(
    *, resource: Resource, plan: PlanSpec, address: str, folder: Path, with_tls: bool
) -> str:
    """Pure: the server's whole configuration, written again at every start."""
    memory, connections = plan_limits(plan)
    data = resource.data
    lines = [
        "# Written by slipway-addons at every start; edits are replaced.",
        "daemonize no",
        'logfile ""',
        f"bind {address}",
        f"unixsocket {folder / 'redis.sock'}",
        "unixsocketperm 700",
        f"dir {folder / 'data'}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"maxmemory {memory}",
        f"maxmemory-policy {check_policy(data.get('policy', DEFAULT_POLICY))}",
        f"maxclients {connections + ADMIN_HEADROOM}",
        "enable-debug-command no",
        "enable-module-command no",
        f"user default on {password_hash(data['password'])} ~* &* +@all -@admin",
        f"user {ADMIN_USER} on {password_hash(data['admin_password'])} ~* &* +@all",
    ]
    if with_tls:
        lines += [
            "port 0",
            f"tls-port {data['port']}",
            f"tls-cert-file {folder / 'server.crt'}",
            f"tls-key-file {folder / 'server.key'}",
            "tls-auth-clients no",
            'tls-protocols "TLSv1.2 TLSv1.3"',
        ]
    else:  # tests of the config and the engine without a bundle
        lines.append(f"port {data['port']}")
    return "\n".join(lines) + "\n"


# ----- the admin connection: RESP over the unix socket ---------------------------


def encode_command(args: Iterable[str | int]) -> bytes:
    parts = [str(a).encode() for a in args]
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        out.append(f"${len(part)}\r\n".encode() + part + b"\r\n")
    return b"".join(out)


class ReplyError(errors.FailedPrecondition):
    reason = "redis_error"


async def read_reply(reader: asyncio.StreamReader) -> Any:
    line = (await reader.readline()).rstrip(b"\r\n")
    if not line:
        raise errors.Unavailable("redis closed the connection")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise ReplyError(f"redis: {rest.decode(errors='replace')}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        return (await reader.readexactly(size + 2))[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await read_reply(reader) for _ in range(count)]
    raise errors.Unavailable(f"redis sent a reply this client cannot read: {line[:40]!r}")


async def admin_call(socket_path: Path, password: str, *commands: list[str | int]) -> list[Any]:
    """Each command's reply, on one connection authenticated as the admin user."""
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            try:
                writer.write(encode_command(["AUTH", ADMIN_USER, password]))
                for command in commands:
                    writer.write(encode_command(command))
                await writer.drain()
                await read_reply(reader)
                return [await read_reply(reader) for _ in commands]
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        raise errors.Unavailable(f"redis did not answer within {CALL_TIMEOUT:g} s") from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise errors.Unavailable(f"redis is not answering: {exc}") from None


def parse_info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


# ----- the servers ---------------------------------------------------------------


class RedisServer:
    """One add-on's redis-server: its folder, its process."""

    def __init__(self, folder: Path, who: RunAs) -> None:
        self.folder = folder
        self.who = who
        self.proc: asyncio.subprocess.Process | None = None
        self.admin_password = ""
        self.wanted = False  # False: stopped on purpose, not to be restarted

    @property
    def socket_path(self) -> Path:
        return self.folder / "redis.sock"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def prepare(self, config: str, bundle: pki.Bundle | None) -> None:
        for path in (self.folder, self.folder / "data"):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.who.own(path, 0o700)
        conf = self.folder / "redis.conf"
        pki.write_private(conf, config.encode())
        self.who.own(conf, 0o600)
        if bundle is not None:
            # Copies the server may read (the bundle's key is root's, 0600).
            for src, dest in ((bundle.cert_file, "server.crt"), (bundle.key_file, "server.key")):
                shutil.copyfile(src, self.folder / dest)
                self.who.own(self.folder / dest, 0o600)

    async def start(self, admin_password: str) -> None:
        self.admin_password = admin_password
        self.wanted = True
        argv = self.who.wrap(
            [engines.find_binary("redis-server"), str(self.folder / "redis.conf")],
            death_signal="TERM",
        )
        self.proc = await spawn_logged(argv, self.folder / "redis.log")
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    if self.proc.returncode is not None:
                        raise errors.Unavailable(f"redis-server exited ({self.proc.returncode})")
                    with contextlib.suppress(errors.Unavailable):
                        await self.call(["PING"])
                        return
                    await asyncio.sleep(0.05)
        except (TimeoutError, errors.SlipwayError) as exc:
            await self.stop()
            log_tail = (self.folder / "redis.log").read_text(errors="replace")[-1500:]
            raise errors.Unavailable(f"redis-server did not start: {exc}\n{log_tail}") from None

    async def call(self, *commands: list[str | int]) -> list[Any]:
        return await admin_call(self.socket_path, self.admin_password, *commands)

    async def stop(self, grace: float = 10.0) -> None:
        self.wanted = False
        # redis flushes its append-only file on SIGTERM and exits.
        await stop_process(self.proc, signal.SIGTERM, grace)


class RedisFleet:
    """Every add-on's server on this host, started from the resource files and
    kept running: one that dies is started again from its file."""

    def __init__(
        self,
        root: Path,
        store: ResourceStore,
        *,
        address: str,
        bundle: pki.Bundle | None,
        plans: tuple[PlanSpec, ...] = PLANS,
    ) -> None:
        self.root = root
        self.store = store
        self.address = address
        self.bundle = bundle
        self.plans = plans
        self.who = RunAs.system_user("redis", "the redis-server package makes it")
        self.servers: dict[str, RedisServer] = {}

    def plan(self, name: str) -> PlanSpec:
        for plan in self.plans:
            if plan.name == name:
                return plan
        raise errors.InvalidArgument(f"{SERVICE} has no plan {name!r}")

    def folder(self, uuid: str) -> Path:
        return self.root / uuid

    def server(self, uuid: str) -> RedisServer:
        found = self.servers.get(uuid)
        if found is None or not found.running:
            raise errors.Unavailable("this add-on's redis-server is not running yet")
        return found

    async def start(self, resource: Resource) -> None:
        """(Re)start the resource's server from what its file says."""
        server = self.servers.get(resource.uuid)
        if server is not None:
            await server.stop()
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        check_reachable(self.root, self.who, "redis-server")
        server = RedisServer(self.folder(resource.uuid), self.who)
        config = config_text(
            resource=resource,
            plan=self.plan(resource.plan),
            address=self.address,
            folder=server.folder,
            with_tls=self.bundle is not None,
        )
        await asyncio.to_thread(server.prepare, config, self.bundle)
        self.servers[resource.uuid] = server
        await server.start(resource.data["admin_password"])
        log.info("redis-server ready", resource=resource.uuid, port=resource.data["port"])

    async def remove(self, uuid: str) -> None:
        server = self.servers.pop(uuid, None)
        if server is not None:
            await server.stop()
        await asyncio.to_thread(shutil.rmtree, self.folder(uuid), True)

    async def start_all(self) -> None:
        for resource in self.store.all(SERVICE):
            if resource.state == PROVISIONED and "port" in resource.data:
                try:
                    await self.start(resource)
                except errors.SlipwayError as exc:
                    log.error("redis-server not started", resource=resource.uuid, error=str(exc))

    async def supervise(self, lock: Callable[[str], asyncio.Lock], interval: float = 1.0) -> None:
        """Level-based: every add-on with a file and no running server gets one."""
        backoff: dict[str, Backoff] = {}
        due: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            for resource in self.store.all(SERVICE):
                server = self.servers.get(resource.uuid)
                if resource.state != PROVISIONED or "port" not in resource.data:
                    continue
                if server is not None and (server.running or not server.wanted):
                    continue
                if loop.time() < due.get(resource.uuid, 0.0):
                    continue
                async with lock(resource.uuid):
                    fresh = self.store.get(SERVICE, resource.uuid)
                    if fresh is None or fresh.state != PROVISIONED:
                        continue
                    code = server.proc.returncode if server and server.proc else None
                    log.error("redis-server exited; restarting", resource=fresh.uuid, status=code)
                    try:
                        await self.start(fresh)
                        backoff.pop(fresh.uuid, None)
                    except errors.SlipwayError as exc:
                        wait = backoff.setdefault(fresh.uuid, Backoff(1.0, 30.0)).next()
                        due[fresh.uuid] = loop.time() + wait
                        log.error(
                            "redis-server restart failed", resource=fresh.uuid, error=str(exc)
                        )

    async def stop_all(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()))


class RedisBackend:
    """The partner API's calls as redis-servers and ACL changes."""

    service = SERVICE
    human_name = "Redis"
    config_vars_prefix = PREFIX
    default_attachment = "REDIS"

    def __init__(
        self,
        fleet: RedisFleet,
        host: str,
        ports: tuple[int, int],
        *,
        new_password: Callable[[], str] = lambda: secrets.token_hex(24),
        port_free: Callable[[int], bool] | None = None,
    ) -> None:
        self.fleet = fleet
        self.host = host  # the address dynos dial
        self.ports = ports
        self.plans = fleet.plans
        self.new_password = new_password
        self.port_free = port_free or port_is_free(fleet.address)

    def url(self, resource: Resource) -> str:
        return f"rediss://:{resource.data['password']}@{self.host}:{resource.data['port']}"

    def _config(self, resource: Resource) -> dict[str, str]:
        return {f"{PREFIX}_URL": self.url(resource)}

    async def provision(self, resource: Resource, options: Mapping[str, str]) -> Outcome:
        unknown = sorted(set(options) - {"maxmemory_policy"})
        if unknown:
            raise errors.InvalidArgument(
                f"{SERVICE} takes only --maxmemory_policy (given: {', '.join(unknown)})"
            )
        data = resource.data
        data.setdefault("policy", check_policy(options.get("maxmemory_policy", DEFAULT_POLICY)))
        self.fleet.plan(resource.plan)
        if "port" not in data:
            others = self.fleet.store.all(SERVICE)
            used = [
                int(r.data["port"]) for r in others if r.uuid != resource.uuid and "port" in r.data
            ]
            data["port"] = choose_port(used, self.ports, self.port_free)
        data.setdefault("password", self.new_password())
        data.setdefault("admin_password", self.new_password())
        # The port is on record before the server holds it: two provisions never share one.
        self.fleet.store.put(resource)
        server = self.fleet.servers.get(resource.uuid)
        if server is None or not server.running:
            await self.fleet.start(resource)
        return Outcome(self._config(resource), f"Redis on port {data['port']} is ready")

    async def change_plan(self, resource: Resource, plan: PlanSpec) -> Outcome:
        memory, connections = plan_limits(plan)
        await self.fleet.server(resource.uuid).call(
            ["CONFIG", "SET", "maxmemory", memory],
            ["CONFIG", "SET", "maxclients", connections + ADMIN_HEADROOM],
        )
        return Outcome(None, f"now {plan.name}: {plan.description}")

    async def deprovision(self, resource: Resource) -> None:
        await self.fleet.remove(resource.uuid)

    async def info(self, resource: Resource) -> dict[str, Any]:
        plan = self.fleet.plan(resource.plan)
        memory, connections = plan_limits(plan)
        text, keys = await self.fleet.server(resource.uuid).call(["INFO"], ["DBSIZE"])
        info = parse_info(text)
        return {
            "plan_description": plan.description,
            "version": info.get("redis_version", ""),
            "memory_used_bytes": int(info.get("used_memory", 0)),
            "memory_limit_bytes": memory,
            "maxmemory_policy": resource.data.get("policy", DEFAULT_POLICY),
            # The admin's own connection is not the app's.
            "connections": max(0, int(info.get("connected_clients", 1)) - 1),
            "connection_limit": connections,
            "keys": int(keys),
            "uptime_seconds": int(info.get("uptime_in_seconds", 0)),
        }

    async def action(self, resource: Resource, action: str, argument: str) -> Outcome:
        server = self.fleet.server(resource.uuid)
        if action == "maxmemory-policy":
            policy = check_policy(argument)
            await server.call(["CONFIG", "SET", "maxmemory-policy", policy])
            resource.data["policy"] = policy
            return Outcome(None, f"maxmemory policy is now {policy}")
        if action == "rotate-credentials":
            password = self.new_password()
            # Connections made with the old password end, as on Heroku.
            await server.call(
                ["ACL", "SETUSER", "default", "resetpass", password_hash(password)],
                ["CLIENT", "KILL", "USER", "default"],
            )
            resource.data["password"] = password
            return Outcome(self._config(resource), "credentials rotated; old connections closed")
        raise errors.NotFound(f"{SERVICE} has no action {action!r}")
