"""The built-in PostgreSQL provider: one cluster per add-ons host, a database and
a role per add-on.

Why one shared cluster rather than a cluster per add-on: a PostgreSQL cluster
costs some 30 MB of memory and a second or two to start before it holds any
data, and an add-ons host serves many small databases (Heroku's Essential
plans are shared clusters too). What isolates add-ons on the shared cluster:

- a role per add-on (random 48-hex password, never the superuser), owner of
  its own database only; ``CONNECT`` and ``TEMP`` revoked from ``PUBLIC`` on
  every database, ``postgres`` and ``template1`` included;
- ``pg_hba``: over TCP only ``hostssl``, only scram-sha-256, and only to the
  database named like the role (``sameuser``); the superuser only on the unix
  socket, in a directory only root and postgres can enter;
- the plan's connection limit on the role; the plan's storage limit enforced
  by ``QuotaLoop`` (over it, new sessions start read-only; see there);
- on the network, only the dynos of attached apps reach the port (the
  agents' firewall, from the grants the controller derives);
- the role's password reaches the server only as a SCRAM verifier, so no log
  line or failed statement ever shows it.

A plan tier that needs hard limits (its own memory, a filesystem quota) is
where a cluster per add-on would come in: not built yet.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from slipway import errors, pki
from slipway import log as slog
from slipway.backoff import Backoff
from slipway.providers.partner import Outcome, PlanSpec
from slipway.providers.resources import PROVISIONED, Resource, ResourceStore
from slipway.providers.runas import RunAs, check_reachable, spawn_logged, stop_process
from slipway.providers.vault import BackupVault

log = slog.get("addons.postgresql")

SERVICE = "postgresql"
PREFIX = "HEROKU_POSTGRESQL"
SQL_TIMEOUT = 30.0
# Scheduled backups (pg:backups:schedule) are kept apart from manual ones, the
# last 7 on every plan, as Heroku keeps 7 daily backups.
SCHEDULED_KEPT = 7
MANUAL, SCHEDULED = "b", "a"  # backup id prefixes: b001 manual, a001 scheduled, as on Heroku
DAY = 86400.0
MB = 1024 * 1024
# Heroku's Essential and Standard tiers, by their limits.
PLANS = (
    PlanSpec(
        "essential-0",
        "20 connections, 1 GB",
        {"connections": 20, "storage_bytes": 1024 * MB, "backups": 5},
        default=True,
    ),
    PlanSpec(
        "essential-1",
        "20 connections, 10 GB",
        {"connections": 20, "storage_bytes": 10240 * MB, "backups": 5},
    ),
    PlanSpec(
        "essential-2",
        "40 connections, 32 GB",
        {"connections": 40, "storage_bytes": 32768 * MB, "backups": 5},
    ),
    PlanSpec(
        "standard-0",
        "120 connections, 64 GB",
        {"connections": 120, "storage_bytes": 65536 * MB, "backups": 25},
    ),
)
# pg_dump and pg_restore answer within the controller's 30 s provider call.
DUMP_TIMEOUT = 25.0
# A capture runs in the background, so it may take this long (restores are
# still made within a provider call: DUMP_TIMEOUT).
CAPTURE_TIMEOUT = 6 * 3600.0
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
MAX_CONNECTIONS = 400  # the cluster's own, above the plans' sum on a typical host


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise errors.FailedPrecondition(
            "PostgreSQL is not installed; run `make setup` (installs it with apt)"
        )
    return found[-1].parent


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802/7677)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def object_name(uuid: str) -> str:
    """The role and database of an add-on: the same name (pg_hba's ``sameuser``)."""
    return "db_" + uuid.replace("-", "")[:24]


def hba_text() -> str:
    return (
        "# Written by slipway-addons at every start; edits are replaced.\n"
        "local  all       postgres                trust\n"
        "local  all       all                     reject\n"
        "hostssl all      postgres  0.0.0.0/0     reject\n"
        "hostssl sameuser all       0.0.0.0/0     scram-sha-256\n"
        "host   all       all       0.0.0.0/0     reject\n"
        "host   all       all       ::/0          reject\n"
    )


class PostgresCluster:
    """One PostgreSQL server: init once, start, supervise, run admin SQL."""

    def __init__(
        self,
        root: Path,
        *,
        listen: Sequence[str],
        port: int,
        bundle: pki.Bundle | None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.root = root
        self.data = root / "data"
        self.run_dir = root / "run"
        self.listen = tuple(listen)
        self.port = port
        self.bundle = bundle
        self.max_connections = max_connections
        self.bin = find_bin_dir()
        self.who = RunAs.system_user("postgres", "the postgresql package makes it")
        self.log_path = root / "postgresql.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self._stopping = False

    # ----- set-up (blocking; run in a thread) --------------------------------

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        check_reachable(self.root, self.who, "PostgreSQL")
        for path in (self.root, self.data, self.run_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.who.uid, self.who.gid)
            os.chmod(path, 0o700)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        (self.data / "pg_hba.conf").write_text(hba_text())
        os.chown(self.data / "pg_hba.conf", self.who.uid, self.who.gid)
        if self.bundle is not None:
            # Copies the server may read (the bundle's key is root's, 0600).
            for src, dest in (
                (self.bundle.cert_file, "server.crt"),
                (self.bundle.key_file, "server.key"),
            ):
                target = self.data / dest
                shutil.copyfile(src, target)
                os.chown(target, self.who.uid, self.who.gid)
                os.chmod(target, 0o600)

    def _initdb(self) -> None:
        log.info("initialising the postgresql cluster", data=str(self.data))
        argv = self.who.wrap(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            death_signal="KILL",
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise errors.Unavailable(f"initdb failed: {done.stderr.strip()[-1500:]}")

    def argv(self) -> list[str]:
        settings = {
            "listen_addresses": ",".join(self.listen),
            "port": str(self.port),
            "unix_socket_directories": str(self.run_dir),
            "max_connections": str(self.max_connections),
            "password_encryption": "scram-sha-256",
            "log_statement": "none",
            "logging_collector": "off",
        }
        if self.bundle is not None:
            settings |= {
                "ssl": "on",
                "ssl_cert_file": str(self.data / "server.crt"),
                "ssl_key_file": str(self.data / "server.key"),
                "ssl_min_protocol_version": "TLSv1.2",
            }
        flags = [part for k, v in settings.items() for part in ("-c", f"{k}={v}")]
        return self.who.wrap([str(self.bin / "postgres"), "-D", str(self.data), *flags])

    # ----- running ------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.prepare)
        self._stopping = False
        self.proc = await spawn_logged(self.argv(), self.log_path)
        try:
            async with asyncio.timeout(timeout):
                await self._wait_answering()
        except (TimeoutError, errors.SlipwayError) as exc:
            await self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise errors.Unavailable(f"postgresql did not start: {exc}\n{tail}") from None
        await self._harden()
        self.ready.set()
        log.info("postgresql ready", port=self.port, listen=",".join(self.listen))

    async def _wait_answering(self) -> None:
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                raise errors.Unavailable(f"postgres exited with status {self.proc.returncode}")
            with contextlib.suppress(errors.SlipwayError):
                await self.sql("SELECT 1", timeout=5)
                return
            await asyncio.sleep(0.2)

    async def _harden(self) -> None:
        """What initdb leaves open to every role: connecting to the shared databases."""
        await self.sql(
            "REVOKE ALL ON DATABASE postgres FROM PUBLIC;\n"
            "REVOKE ALL ON DATABASE template1 FROM PUBLIC;\n"
        )

    async def supervise(self) -> None:
        """Restart the server when it dies (not when we stop it)."""
        backoff = Backoff(initial=1.0, maximum=30.0)
        while True:
            proc = self.proc
            if proc is None:
                await self.start()
                continue
            code = await proc.wait()
            if self._stopping:
                return
            self.ready.clear()
            log.error("postgresql exited; restarting", status=code)
            await asyncio.sleep(backoff.next())
            try:
                await self.start()
                backoff.reset()
            except errors.SlipwayError as exc:
                log.error("postgresql restart failed", error=str(exc))
                self.proc = None

    async def stop(self, grace: float = 15.0) -> None:
        self._stopping = True
        self.ready.clear()
        # setpriv execs postgres: the pid is the postmaster's. SIGINT: fast shutdown.
        await stop_process(self.proc, signal.SIGINT, grace)

    async def sql(
        self, script: str, *, database: str = "postgres", timeout: float = SQL_TIMEOUT
    ) -> str:
        """Run ``script`` as the superuser over the unix socket; its unaligned output."""
        out = await self._client(
            "psql",
            ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database],
            stdin=script,
            timeout=timeout,
            late=f"postgresql did not answer within {timeout:g} s",
        )
        return out.strip()

    async def tool(self, name: str, *args: str, timeout: float = DUMP_TIMEOUT) -> None:
        """Run pg_dump or pg_restore as the superuser over the unix socket."""
        await self._client(
            name,
            list(args),
            stdin="",
            timeout=timeout,
            late=f"{name} did not finish within {timeout:g} s (databases this size need "
            "pg_dump from a one-off dyno for now)",
        )

    async def _client(
        self, name: str, args: list[str], *, stdin: str, timeout: float, late: str
    ) -> str:
        """One of PostgreSQL's client programs as the superuser over the unix
        socket; its stdout, or Unavailable with ``late`` or its stderr."""
        argv = [str(self.bin / name), "-h", str(self.run_dir), "-p", str(self.port)]
        argv += ["-U", "postgres", *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "5"}
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(stdin.encode())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise errors.Unavailable(late) from None
        if proc.returncode != 0:
            what = "postgresql" if name == "psql" else name
            raise errors.Unavailable(f"{what}: {err.decode(errors='replace').strip()[-500:]}")
        return out.decode()


def backup_state(backup: dict[str, Any]) -> str:
    return str(backup.get("state", COMPLETED))  # records before captures ran in the background


def _backup(resource: Resource, backup_id: str, *, usable: bool = True) -> dict[str, Any]:
    """The backup named ``backup_id``, or the latest complete one when it is "".
    ``usable``: it must be complete (to restore or download it)."""
    kept: list[dict[str, Any]] = resource.data.get("backups", [])
    done = [b for b in kept if backup_state(b) == COMPLETED]
    if not kept:
        raise errors.FailedPrecondition("this database has no backups yet; capture one first")
    if not backup_id:
        if not done:
            raise errors.FailedPrecondition(
                "this database has no complete backups yet; wait for the capture"
            )
        return done[-1]
    for found in kept:
        if found["id"] != backup_id:
            continue
        state = backup_state(found)
        if usable and state == RUNNING:
            raise errors.FailedPrecondition(f"backup {backup_id} is still being captured")
        if usable and state == FAILED:
            raise errors.FailedPrecondition(
                f"backup {backup_id} failed: {found.get('error', 'unknown error')}"
            )
        return found
    known = ", ".join(b["id"] for b in kept)
    raise errors.NotFound(f"no backup {backup_id!r}; this database has {known}")


def _limit(plan: PlanSpec, key: str) -> int:
    return int(plan.limits.get(key, 0))


def schedule_time(text: str) -> str:
    """A daily backup time, ``HH:MM`` in UTC."""
    text = text.strip().upper().removesuffix("UTC").strip()
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise errors.InvalidArgument(f"give the time of day as HH:MM (UTC); not {text!r}")
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        raise errors.InvalidArgument(f"{text!r} is not a time of day (00:00 to 23:59 UTC)")
    return f"{int(hours):02d}:{minutes}"


def day_slot(at: str, t: float) -> int:
    """Which day's backup is the latest one due at ``t`` for a schedule at ``at``."""
    hours, minutes = at.split(":")
    return int((t - (int(hours) * 3600 + int(minutes) * 60)) // DAY)


def scheduled_due(resource: Resource, now: float) -> int | None:
    """The day slot a scheduled backup is due for, or None (pure)."""
    schedule = resource.data.get("backup_schedule")
    if resource.state != PROVISIONED or not schedule:
        return None
    slot = day_slot(schedule["at"], now)
    return slot if slot > int(schedule.get("last_slot", slot)) else None


def kept_backups(
    backups: list[dict[str, Any]], new: dict[str, Any], limit: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pure: (backups kept, backups expired) once ``new`` is added; only backups of
    its own kind (manual or scheduled) count towards its ``limit``."""
    kind = new["id"][0]
    same = [b for b in backups if b["id"][0] == kind] + [new]
    others = [b for b in backups if b["id"][0] != kind]
    expired = same[:-limit] if limit else []
    kept = sorted(others + same[len(expired) :], key=lambda b: (b["created_at"], b["id"]))
    return kept, expired


class PostgresBackend:
    """The partner API's calls as SQL on the shared cluster."""

    service = SERVICE
    human_name = "PostgreSQL"
    config_vars_prefix = PREFIX
    default_attachment = "DATABASE"

    def __init__(
        self,
        cluster: PostgresCluster,
        host: str,
        *,
        plans: tuple[PlanSpec, ...] = PLANS,
        new_password: Callable[[], str] = lambda: secrets.token_hex(24),
        vault: BackupVault | None = None,
    ) -> None:
        self.cluster = cluster
        self.host = host  # the address dynos dial
        self.plans = plans
        self.new_password = new_password
        # Where backups are kept for good; None: on this host only (development).
        self.vault = vault
        # Set by bind(): background captures record their outcome themselves.
        self._store: ResourceStore | None = None
        self._lock: Callable[[str], asyncio.Lock] | None = None
        # Captures and restores under way: "capture:NAME" / "restore:NAME" -> task.
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def bind(self, store: ResourceStore, lock: Callable[[str], asyncio.Lock]) -> None:
        """The records and per-resource locks (the partner server's). A capture left
        running by a daemon that stopped is marked failed: its dump never finished."""
        self._store, self._lock = store, lock
        for resource in store.all(SERVICE):
            running = [b for b in resource.data.get("backups", []) if backup_state(b) == RUNNING]
            for backup in running:
                backup.update(state=FAILED, error="interrupted: the add-ons daemon stopped")
                (self._backups_dir(resource) / f"{backup['id']}.partial").unlink(missing_ok=True)
            restore = resource.data.get("restore") or {}
            cut_short = restore.get("state") == RUNNING
            if cut_short:
                restore.update(
                    state=FAILED,
                    error="interrupted: the add-ons daemon stopped; the database may be partly"
                    " restored, restore it again",
                )
            if running or cut_short:
                store.put(resource)

    def plan(self, name: str) -> PlanSpec:
        for plan in self.plans:
            if plan.name == name:
                return plan
        raise errors.InvalidArgument(f"{SERVICE} has no plan {name!r}")

    def url(self, resource: Resource) -> str:
        name, password = resource.data["name"], resource.data["password"]
        return (
            f"postgres://{name}:{password}@{self.host}:{self.cluster.port}/{name}?sslmode=require"
        )

    def _config(self, resource: Resource) -> dict[str, str]:
        return {f"{PREFIX}_URL": self.url(resource)}

    async def provision(self, resource: Resource, options: Mapping[str, str]) -> Outcome:
        if options:
            raise errors.InvalidArgument(
                f"{SERVICE} takes no options (given: {', '.join(sorted(options))})"
            )
        await self._ready()
        plan = self.plan(resource.plan)
        resource.data.setdefault("name", object_name(resource.uuid))
        resource.data.setdefault("password", self.new_password())
        name = resource.data["name"]
        verifier = scram_verifier(resource.data["password"])
        ident = f'"{name}"'
        await self.cluster.sql(
            f"SELECT 'CREATE ROLE {ident}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = {literal(name)})\\gexec\n"
            f"ALTER ROLE {ident} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"NOBYPASSRLS CONNECTION LIMIT {_limit(plan, 'connections')} "
            f"PASSWORD {literal(verifier)};\n"
            f"SELECT 'CREATE DATABASE {ident} OWNER {ident}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = {literal(name)})\\gexec\n"
            f"REVOKE ALL ON DATABASE {ident} FROM PUBLIC;\n"
        )
        return Outcome(self._config(resource), f"PostgreSQL database {name} is ready")

    async def change_plan(self, resource: Resource, plan: PlanSpec) -> Outcome:
        await self._ready()
        name = resource.data["name"]
        await self.cluster.sql(
            f'ALTER ROLE "{name}" CONNECTION LIMIT {_limit(plan, "connections")};\n'
        )
        return Outcome(None, f"now {plan.name}: {plan.description}")

    async def deprovision(self, resource: Resource) -> None:
        await self._ready()
        name = resource.data.get("name") or object_name(resource.uuid)
        await self.cluster.sql(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);\nDROP ROLE IF EXISTS "{name}";\n'
        )
        # Heroku keeps a destroyed database's backups no longer either.
        for backup in resource.data.get("backups", []):
            await self._forget(resource, backup["id"])
        shutil.rmtree(self._backups_dir(resource), ignore_errors=True)

    async def info(self, resource: Resource) -> dict[str, Any]:
        await self._ready()
        name = resource.data["name"]
        plan = self.plan(resource.plan)
        restore = resource.data.get("restore") or {}
        if restore.get("state") == RUNNING:
            # Dropped and made again by the restore: its figures mean nothing yet.
            size, connections, tables = "0", "0", "0"
            version = await self.cluster.sql("SELECT current_setting('server_version')")
        else:
            row = await self.cluster.sql(
                f"SELECT pg_database_size({literal(name)}), "
                f"(SELECT count(*) FROM pg_stat_activity WHERE datname = {literal(name)}), "
                "current_setting('server_version')"
            )
            size, connections, version = row.split("|")
            tables = await self.cluster.sql(
                "SELECT count(*) FROM pg_stat_user_tables", database=name
            )
        return {
            "plan_description": plan.description,
            "data_size_bytes": int(size),
            "storage_limit_bytes": _limit(plan, "storage_bytes"),
            "connections": int(connections),
            "connection_limit": _limit(plan, "connections"),
            "tables": int(tables or 0),
            "version": version,
            "read_only": bool(resource.data.get("over_quota")),
            "backups": list(resource.data.get("backups", [])),
            "backup_limit": _limit(plan, "backups"),
            "backup_schedule": (resource.data.get("backup_schedule") or {}).get("at", ""),
            "scheduled_backup_limit": SCHEDULED_KEPT,
            "restore": dict(resource.data.get("restore") or {}),
        }

    async def action(self, resource: Resource, action: str, argument: str) -> Outcome:
        await self._ready()
        name = resource.data["name"]
        if action == "backup-capture":
            return self.start_capture(resource)
        if action == "backup-restore":
            return self.start_restore(resource, argument)
        if action == "backup-schedule":
            at = schedule_time(argument)
            # From now on: a time already past today first runs tomorrow.
            resource.data["backup_schedule"] = {"at": at, "last_slot": day_slot(at, time.time())}
            return Outcome(None, f"daily backups of {name} scheduled at {at} UTC")
        if action == "backup-unschedule":
            if not resource.data.pop("backup_schedule", None):
                raise errors.FailedPrecondition(f"{name} has no backup schedule")
            return Outcome(None, f"daily backups of {name} stopped; its backups stay")
        if action == "backup-delete":
            found = _backup(resource, argument, usable=False)
            if backup_state(found) == RUNNING:
                raise errors.FailedPrecondition(f"backup {found['id']} is still being captured")
            await self._forget(resource, found["id"])
            resource.data["backups"] = [b for b in resource.data["backups"] if b is not found]
            return Outcome(None, f"deleted backup {found['id']}")
        if action == "rotate-credentials":
            resource.data["password"] = self.new_password()
            verifier = scram_verifier(resource.data["password"])
            # Sessions on the old password end: Heroku's rotate does the same.
            await self.cluster.sql(
                f'ALTER ROLE "{name}" PASSWORD {literal(verifier)};\n'
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE usename = {literal(name)};\n"
            )
            return Outcome(self._config(resource), "credentials rotated; old sessions closed")
        if action == "reset":
            await self._recreate(name)
            resource.data.pop("over_quota", None)
            return Outcome(None, "the database is empty again")
        raise errors.NotFound(f"{SERVICE} has no action {action!r}")

    async def _recreate(self, name: str) -> None:
        """The add-on's database dropped (its sessions ended) and made again, empty."""
        await self.cluster.sql(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);\n'
            f'CREATE DATABASE "{name}" OWNER "{name}";\n'
            f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC;\n'
        )

    async def read_backup(self, resource: Resource, backup: str, offset: int, length: int) -> bytes:
        """``length`` bytes of a kept backup from ``offset`` (fewer at its end)."""
        found = _backup(resource, backup)
        path = await self._local_dump(resource, found["id"])
        try:
            with path.open("rb") as dump:
                dump.seek(offset)
                return dump.read(length)
        except FileNotFoundError:
            raise errors.NotFound(f"backup {found['id']} is gone (expired or deleted)") from None

    def _backups_dir(self, resource: Resource) -> Path:
        return self.cluster.root / "backups" / resource.uuid

    @staticmethod
    def _object_name(resource: Resource, backup_id: str) -> str:
        return f"{resource.uuid}/{backup_id}.dump"

    async def _local_dump(self, resource: Resource, backup_id: str) -> Path:
        """This host's copy of a backup, fetched back from the object store if gone."""
        path = self._backups_dir(resource) / f"{backup_id}.dump"
        if not path.exists() and self.vault is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            await self.vault.get(self._object_name(resource, backup_id), path)
            path.chmod(0o600)
            log.info("backup fetched from the object store", backup=backup_id)
        return path

    async def _forget(self, resource: Resource, backup_id: str) -> None:
        """A backup gone from this host and from the object store."""
        (self._backups_dir(resource) / f"{backup_id}.dump").unlink(missing_ok=True)
        if self.vault is None:
            return
        try:
            await self.vault.delete(self._object_name(resource, backup_id))
        except errors.SlipwayError as exc:
            # Left in the bucket (an operator can remove it); the record forgets it.
            log.warning(
                "backup not deleted from the object store", backup=backup_id, error=str(exc)
            )

    def start_capture(self, resource: Resource, *, scheduled: bool = False) -> Outcome:
        """Begin a logical backup (pg_dump's custom format) in the background: the
        record shows it ``running`` at once, ``completed`` or ``failed`` once done
        (pg:backups:capture waits for that). Past the plan's count the oldest goes,
        as Heroku expires manual backups (scheduled ones count apart: the last
        SCHEDULED_KEPT). The caller holds the resource's lock and writes the record."""
        if self._store is None or self._lock is None:
            raise errors.Unavailable("backups are not set up on this add-ons host")
        self._check_idle(resource)
        kind, seq = (SCHEDULED, "scheduled_backup_seq") if scheduled else (MANUAL, "backup_seq")
        number = int(resource.data.get(seq, 0)) + 1
        backup_id = f"{kind}{number:03d}"
        resource.data[seq] = number
        entry: dict[str, Any] = {
            "id": backup_id,
            "created_at": time.time(),
            "size_bytes": 0,
            "state": RUNNING,
            "kept_in": "object store" if self.vault is not None else "this add-ons host",
        }
        if scheduled:
            entry["scheduled"] = True
        resource.data["backups"] = [*resource.data.get("backups", []), entry]
        name = self._object_name(resource, backup_id)
        self.tasks[f"capture:{name}"] = asyncio.create_task(
            self._capture(resource.uuid, resource.data["name"], backup_id, scheduled)
        )
        return Outcome(None, f"backup {backup_id} started")

    async def _capture(self, uuid: str, database: str, backup_id: str, scheduled: bool) -> None:
        assert self._store is not None and self._lock is not None
        folder = self.cluster.root / "backups" / uuid
        dump = folder / f"{backup_id}.dump"
        name = f"{uuid}/{backup_id}.dump"
        error = ""
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial = folder / f"{backup_id}.partial"
            try:
                await self.cluster.tool(
                    "pg_dump", "-Fc", "-d", database, "-f", str(partial), timeout=CAPTURE_TIMEOUT
                )
                partial.chmod(0o600)
                partial.rename(dump)
            finally:
                partial.unlink(missing_ok=True)
            if self.vault is not None:
                await self.vault.put(name, dump)
        except (errors.SlipwayError, OSError) as exc:
            error = exc.message if isinstance(exc, errors.SlipwayError) else str(exc)
            dump.unlink(missing_ok=True)  # a backup is one kept for good, or none
            log.warning("backup failed", database=database, backup=backup_id, error=error)
        finally:
            self.tasks.pop(f"capture:{name}", None)
        async with self._lock(uuid):
            resource = self._store.get(SERVICE, uuid)
            if resource is None or resource.state != PROVISIONED:
                # Deprovisioned meanwhile: nothing of it may stay.
                dump.unlink(missing_ok=True)
                if self.vault is not None and not error:
                    with contextlib.suppress(errors.SlipwayError):
                        await self.vault.delete(name)
                return
            await self._finish(resource, backup_id, error, scheduled)
            self._store.put(resource)

    async def _finish(
        self, resource: Resource, backup_id: str, error: str, scheduled: bool
    ) -> None:
        backups = list(resource.data.get("backups", []))
        entry = next((b for b in backups if b["id"] == backup_id), None)
        if entry is None:
            return
        if error:
            entry.update(state=FAILED, error=error)
            resource.data["backups"] = backups
            return
        entry.update(
            state=COMPLETED,
            size_bytes=(self._backups_dir(resource) / f"{backup_id}.dump").stat().st_size,
            finished_at=time.time(),
        )
        others = [b for b in backups if b is not entry]
        limit = SCHEDULED_KEPT if scheduled else _limit(self.plan(resource.plan), "backups") or 1
        kept, expired = kept_backups(others, entry, limit)
        for old in expired:
            await self._forget(resource, old["id"])
        resource.data["backups"] = kept
        if expired:
            gone = ", ".join(old["id"] for old in expired)
            log.info("backups expired", backup=backup_id, expired=gone, limit=limit)
        log.info("backup captured", backup=backup_id, size_bytes=entry["size_bytes"])

    def start_restore(self, resource: Resource, argument: str) -> Outcome:
        """Begin making the database what the backup holds, in the background:
        emptied first, so tables made since are gone too; the URL stays. The
        record's ``restore`` says ``running``, then ``completed`` or ``failed``."""
        if self._store is None or self._lock is None:
            raise errors.Unavailable("backups are not set up on this add-ons host")
        found = _backup(resource, argument)
        self._check_idle(resource)
        resource.data["restore"] = {"backup": found["id"], "state": RUNNING, "at": time.time()}
        name = self._object_name(resource, found["id"])
        self.tasks[f"restore:{name}"] = asyncio.create_task(
            self._restore(resource.uuid, resource.data["name"], found["id"])
        )
        return Outcome(None, f"restore of backup {found['id']} started")

    def _check_idle(self, resource: Resource) -> None:
        """One backup operation at a time per database: a dump taken during a
        restore, or a restore over a running dump, would hold neither state."""
        restore = resource.data.get("restore") or {}
        if restore.get("state") == RUNNING:
            raise errors.FailedPrecondition(
                f"backup {restore['backup']} is being restored into this database; wait for it"
            )
        running = [b["id"] for b in resource.data.get("backups", []) if backup_state(b) == RUNNING]
        if running:
            raise errors.FailedPrecondition(
                f"backup {running[0]} of this database is still being captured; wait for it"
            )

    async def _restore(self, uuid: str, database: str, backup_id: str) -> None:
        assert self._store is not None and self._lock is not None
        resource = self._store.get(SERVICE, uuid)
        error = ""
        try:
            if resource is None:
                raise errors.NotFound("the database is gone")
            # Fetched before anything is dropped: a backup that cannot be read
            # leaves the database as it was.
            dump = await self._local_dump(resource, backup_id)
            await self._recreate(database)
            # Restored as the add-on's role, so it owns what comes back.
            await self.cluster.tool(
                "pg_restore",
                "--no-owner",
                "--no-acl",
                f"--role={database}",
                "-d",
                database,
                str(dump),
                timeout=CAPTURE_TIMEOUT,
            )
        except (errors.SlipwayError, OSError) as exc:
            error = exc.message if isinstance(exc, errors.SlipwayError) else str(exc)
            log.warning("restore failed", database=database, backup=backup_id, error=error)
        finally:
            self.tasks.pop(f"restore:{uuid}/{backup_id}.dump", None)
        async with self._lock(uuid):
            fresh = self._store.get(SERVICE, uuid)
            if fresh is None:
                return
            fresh.data["restore"] = {
                "backup": backup_id,
                "state": FAILED if error else COMPLETED,
                "at": time.time(),
                **({"error": error} if error else {}),
            }
            if not error:
                fresh.data.pop("over_quota", None)
                log.info("backup restored", database=database, backup=backup_id)
            self._store.put(fresh)

    async def _ready(self) -> None:
        if not self.cluster.ready.is_set():
            raise errors.Unavailable("postgresql is not running on this add-ons host yet")


# ----- storage limits ---------------------------------------------------------


def quota_changes(
    sizes: Mapping[str, int], limits: Mapping[str, int], limited: set[str]
) -> tuple[list[str], list[str]]:
    """Pure: (databases to make read-only, databases to let write again).

    Hysteresis of 5%: a database just under its limit after a DELETE does not
    flap between the two on every pass.
    """
    to_limit, to_lift = [], []
    for name, size in sorted(sizes.items()):
        limit = limits.get(name, 0)
        if not limit:
            continue
        if size > limit and name not in limited:
            to_limit.append(name)
        elif size < limit * 0.95 and name in limited:
            to_lift.append(name)
    return to_limit, to_lift


class _ClusterLoop:
    """A pass over the add-on databases every ``interval`` seconds while the
    cluster is up; a failed pass is logged and the next one tries again."""

    what = "databases"

    def __init__(
        self,
        backend: PostgresBackend,
        store: ResourceStore,
        lock: Callable[[str], asyncio.Lock],
        *,
        interval: float = 30.0,
    ) -> None:
        self.backend = backend
        self.store = store
        self.lock = lock  # the partner server's, per resource
        self.interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.backend.cluster.ready.is_set():
                continue
            try:
                await self.tick()
            except (errors.SlipwayError, OSError) as exc:
                log.warning("pass failed", loop=self.what, error=str(exc))

    async def tick(self) -> object:
        raise NotImplementedError


class QuotaLoop(_ClusterLoop):
    """Holds each add-on database to its plan's storage limit, level-based.

    Over the limit, the database's new sessions start read-only
    (``default_transaction_read_only``) and its current ones are closed, the
    way Heroku revokes writes on an Essential database over its row or size
    limit. An app can still ``DELETE`` after ``SET transaction_read_only =
    off`` (which is also how a determined app would write on): this is a
    limit for well-behaved apps and a clear signal, not a hard cap.
    """

    what = "storage limits"

    async def tick(self) -> None:
        resources = {
            r.data["name"]: r
            for r in self.store.all(SERVICE)
            # One being restored may not exist this instant.
            if r.state == PROVISIONED
            and "name" in r.data
            and (r.data.get("restore") or {}).get("state") != RUNNING
        }
        if not resources:
            return
        names = ", ".join(literal(n) for n in resources)
        rows = await self.backend.cluster.sql(
            f"SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname IN ({names})"
        )
        sizes = {}
        for line in rows.splitlines():
            name, _, size = line.partition("|")
            sizes[name] = int(size)
        limits = {
            n: _limit(self.backend.plan(r.plan), "storage_bytes") for n, r in resources.items()
        }
        limited = {n for n, r in resources.items() if r.data.get("over_quota")}
        to_limit, to_lift = quota_changes(sizes, limits, limited)
        for name in to_limit:
            async with self.lock(resources[name].uuid):
                await self._make_read_only(name, resources[name])
        for name in to_lift:
            async with self.lock(resources[name].uuid):
                await self._lift(name, resources[name])

    async def _make_read_only(self, name: str, resource: Resource) -> None:
        await self.backend.cluster.sql(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = on;\n'
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = {literal(name)};\n"
        )
        self._mark(resource, True)
        log.warning("database over its storage limit: read-only", database=name)

    async def _lift(self, name: str, resource: Resource) -> None:
        await self.backend.cluster.sql(
            f'ALTER DATABASE "{name}" RESET default_transaction_read_only;\n'
        )
        self._mark(resource, False)
        log.info("database back under its storage limit", database=name)

    def _mark(self, resource: Resource, over: bool) -> None:
        fresh = self.store.get(resource.service, resource.uuid)
        if fresh is None:
            return
        if over:
            fresh.data["over_quota"] = True
        else:
            fresh.data.pop("over_quota", None)
        self.store.put(fresh)


class BackupScheduleLoop(_ClusterLoop):
    """Takes each database's scheduled backup once a day at its time (UTC).

    Level-based on the resource records: a day's backup not started yet (the
    daemon was down at the time, or another capture or a restore was running)
    is started at the next pass of that day; days missed entirely are not made
    up. The record's ``last_slot`` is written when the capture starts: one that
    then fails (or is cut short by a restart, see ``PostgresBackend.bind``)
    shows as failed and is not taken again that day.
    """

    what = "scheduled backups"

    def __init__(
        self,
        backend: PostgresBackend,
        store: ResourceStore,
        lock: Callable[[str], asyncio.Lock],
        *,
        interval: float = 60.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(backend, store, lock, interval=interval)
        self.now = now

    async def tick(self) -> list[str]:
        """One pass; returns the ids of the backups it took."""
        taken = []
        for resource in self.store.all(SERVICE):
            if scheduled_due(resource, self.now()) is None:
                continue
            async with self.lock(resource.uuid):
                fresh = self.store.get(SERVICE, resource.uuid)
                slot = scheduled_due(fresh, self.now()) if fresh is not None else None
                if fresh is None or slot is None:
                    continue
                try:
                    outcome = self.backend.start_capture(fresh, scheduled=True)
                except errors.SlipwayError as exc:
                    # One still running (a capture by hand): the next pass tries again.
                    log.warning(
                        "scheduled backup not started",
                        database=fresh.data.get("name"),
                        error=str(exc),
                    )
                    continue
                fresh.data["backup_schedule"]["last_slot"] = slot
                self.store.put(fresh)
                taken.append(fresh.data["backups"][-1]["id"])
                log.info(
                    "scheduled backup started", database=fresh.data["name"], message=outcome.message
                )
        return taken
