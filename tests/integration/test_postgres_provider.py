"""The built-in PostgreSQL provider on a real PostgreSQL server, through its
partner API over HTTPS (the controller's own client makes the calls)."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.bus.addon_provider import ProviderClient
from controller.core.addons import AddonRecord, Outcome, ServiceRecord, parse_manifest
from slipway import engines, errors, http1, objstore, pki, tls
from slipway.providers import manifest
from slipway.providers.partner import PartnerServer, PlanSpec
from slipway.providers.postgres import (
    PLANS,
    BackupScheduleLoop,
    PostgresBackend,
    PostgresCluster,
    QuotaLoop,
    find_bin_dir,
)
from slipway.providers.resources import ResourceStore
from slipway.providers.vault import BackupVault
from tests.harness import secure
from tests.harness.enginedirs import searchable_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs PostgreSQL as its own user")

TINY = PlanSpec(
    "tiny",
    "2 connections, 12 MB",
    {"connections": 2, "storage_bytes": 12 * 1024 * 1024, "backups": 2},
)


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    with searchable_dir("slipway-pg-") as path:
        yield path


@dataclass
class Provider:
    client: ProviderClient
    server: PartnerServer
    cluster: PostgresCluster
    backend: PostgresBackend
    store: ResourceStore
    service: ServiceRecord

    def record(self, plan: str = "essential-0") -> AddonRecord:
        return AddonRecord(
            id=str(uuid.uuid4()),
            name="postgresql-test-1",
            service="postgresql",
            plan=plan,
            app="shop",
            state="provisioning",
            created_at=0.0,
        )


@pytest.fixture
async def provider(state_dir: Path) -> AsyncIterator[Provider]:
    root = state_dir / uuid.uuid4().hex[:8]
    bundle = secure.bundle(pki.Role.ADDONS)
    cluster = PostgresCluster(
        root / "postgresql", listen=["127.0.0.1"], port=engines.free_port(), bundle=bundle
    )
    await cluster.start()
    backend = PostgresBackend(cluster, "127.0.0.1", plans=(*PLANS, TINY))
    store = ResourceStore(root / "resources")
    store.prepare()
    password = manifest.service_password(root / "secrets", "postgresql")
    server = PartnerServer(
        {"postgresql": backend},
        {"postgresql": password},
        store,
        "127.0.0.1:0",
        tls.server_context(bundle, require_client_cert=False),
    )
    await server.start()
    doc = manifest.manifest(
        backend,
        password=password,
        base_url=f"https://127.0.0.1:{server.port}",
        ca_pem=bundle.ca_file.read_text(),
        address="127.0.0.1",
        ports=str(cluster.port),
    )
    service = parse_manifest(json.dumps(doc), now=0.0)
    assert service.built_in and service.network_ports == str(cluster.port)
    serving = asyncio.create_task(server.run())
    try:
        yield Provider(ProviderClient(), server, cluster, backend, store, service)
    finally:
        serving.cancel()
        await cluster.stop()


def psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    """As an app would connect: the URL alone, over TCP."""
    return subprocess.run(
        [str(find_bin_dir() / "psql"), "-XqAt", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "PGCONNECT_TIMEOUT": "5"},
    )


def partner_api(p: Provider, record: AddonRecord) -> tuple[dict[str, str], ssl.SSLContext, str]:
    """What the controller sends the partner server for one add-on: headers, TLS, URL."""
    headers = {"Authorization": http1.basic_auth("postgresql", p.server.passwords["postgresql"])}
    return (
        headers,
        tls.client_context(None, ca_only=secure.ca_file()),
        f"{p.service.base_url}/{record.id}",
    )


async def run_action(
    p: Provider, record: AddonRecord, action: str, argument: str = ""
) -> tuple[int, dict[str, object]]:
    """An add-on action as the controller sends it (pg:backups:*, pg:reset...)."""
    headers, context, base = partner_api(p, record)
    got = await http1.request(
        "POST",
        f"{base}/actions/{action}",
        body=json.dumps({"uuid": record.id, "argument": argument}).encode(),
        headers=headers,
        context=context,
    )
    return got.status, json.loads(got.body)


async def capture(p: Provider, record: AddonRecord) -> str:
    """pg:backups:capture: the action answers at once; the dump runs in the
    background and the record says when it is done."""
    status, body = await run_action(p, record, "backup-capture")
    assert status == 200 and str(body["message"]).endswith(" started"), body
    await asyncio.gather(*p.backend.tasks.values())
    backup_id = str(body["message"]).split()[1]
    got = await p.client.details(p.service, record)
    (entry,) = [b for b in got["backups"] if b["id"] == backup_id]  # type: ignore[union-attr]
    assert entry["state"] == "completed", entry
    return backup_id


async def restore(p: Provider, record: AddonRecord, backup: str = "") -> str:
    """pg:backups:restore: started by the action, done in the background."""
    status, body = await run_action(p, record, "backup-restore", backup)
    assert status == 200 and str(body["message"]).endswith(" started"), body
    await asyncio.gather(*p.backend.tasks.values())
    got = await p.client.details(p.service, record)
    state = got["restore"]
    assert isinstance(state, dict) and state["state"] == "completed", state
    return str(state["backup"])


async def provision(p: Provider, record: AddonRecord) -> str:
    answer = await p.client.provision(p.service, record, "https://127.0.0.1:1/unused")
    assert answer.outcome is Outcome.DONE, answer.message
    assert answer.config is not None
    return answer.config["HEROKU_POSTGRESQL_URL"]


async def test_provision_gives_a_private_database_with_tls(provider: Provider) -> None:
    first, second = provider.record(), provider.record()
    url = await provision(provider, first)
    other = await provision(provider, second)
    assert url.startswith("postgres://db_") and url.endswith("?sslmode=require")

    done = psql(url, "CREATE TABLE t (n int); INSERT INTO t VALUES (7); SELECT n FROM t;")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "7"
    ssl_on = psql(url, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert ssl_on.stdout.strip() == "t"

    # Delivered again (at least once): the same database, the same credentials.
    assert await provision(provider, first) == url
    assert psql(url, "SELECT n FROM t").stdout.strip() == "7"

    # One add-on's role reaches neither the other's database nor the shared ones.
    own_user = url.split("//")[1].split(":")[0]
    other_db = other.rsplit("/", 1)[1]
    foreign = url.rsplit("/", 1)[0] + "/" + other_db
    assert psql(foreign, "SELECT 1").returncode != 0
    for shared in ("postgres", "template1"):
        attempt = psql(url.rsplit("/", 1)[0] + f"/{shared}?sslmode=require", "SELECT 1")
        assert attempt.returncode != 0
    # Without TLS it is refused too.
    plain = url.replace("sslmode=require", "sslmode=disable")
    assert psql(plain, "SELECT 1").returncode != 0
    # Not the superuser.
    assert (
        psql(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").stdout.strip()
        == "f"
    )
    assert own_user != "postgres"


async def test_plan_limits_connections_and_deprovision_removes_everything(
    provider: Provider,
) -> None:
    record = provider.record(plan="tiny")
    url = await provision(provider, record)
    limit = psql(url, "SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user")
    assert limit.stdout.strip() == "2"

    record.plan = "essential-0"
    changed = await provider.client.change_plan(provider.service, record)
    assert changed.outcome is Outcome.DONE, changed.message
    assert (
        psql(url, "SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user").stdout.strip()
        == "20"
    )

    gone = await provider.client.deprovision(provider.service, record)
    assert gone.outcome is Outcome.DONE, gone.message
    name = url.rsplit("/", 1)[1].split("?")[0]
    left = await provider.cluster.sql(
        f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        f" UNION ALL SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"
    )
    assert left.split() == ["0", "0"]
    assert psql(url, "SELECT 1").returncode != 0
    # Deprovisioned twice: the second finds nothing, which is done too.
    again = await provider.client.deprovision(provider.service, record)
    assert again.outcome is Outcome.DONE


async def test_bad_requests_are_refused_with_a_reason(provider: Provider) -> None:
    record = provider.record(plan="no-such-plan")
    refused = await provider.client.provision(provider.service, record, "https://x/")
    assert refused.outcome is Outcome.REFUSED
    assert "no plan 'no-such-plan'" in refused.message and "essential-0" in refused.message

    record = provider.record()
    record.options = {"version": "9"}
    refused = await provider.client.provision(provider.service, record, "https://x/")
    assert refused.outcome is Outcome.REFUSED
    assert "takes no options" in refused.message

    base = provider.service.base_url
    context = tls.client_context(None, ca_only=secure.ca_file())
    wrong = await http1.request(
        "POST",
        base,
        headers={"Authorization": http1.basic_auth("postgresql", "not-the-password-at-all")},
        body=b'{"uuid": "' + str(uuid.uuid4()).encode() + b'"}',
        context=context,
    )
    assert wrong.status == 401
    assert provider.store.all("postgresql") == []


async def test_rotate_reset_and_the_storage_limit(provider: Provider) -> None:
    record = provider.record(plan="tiny")
    url = await provision(provider, record)
    assert psql(url, "CREATE TABLE t AS SELECT 1 AS n").returncode == 0

    # The partner server's own actions, as the pg:* commands call them.
    headers, context, base = partner_api(provider, record)
    rotated = await http1.request(
        "POST", f"{base}/actions/rotate-credentials", headers=headers, context=context
    )
    assert rotated.status == 200
    new_url = json.loads(rotated.body)["config"]["HEROKU_POSTGRESQL_URL"]
    assert new_url != url
    assert psql(url, "SELECT 1").returncode != 0
    assert psql(new_url, "SELECT n FROM t").stdout.strip() == "1"

    # Over the plan's storage: new sessions are read-only; under it again: writable.
    loop = QuotaLoop(provider.backend, provider.store, provider.server.lock)
    grow = psql(
        new_url, "CREATE TABLE big AS SELECT repeat('x', 1000) AS s FROM generate_series(1, 8000)"
    )
    assert grow.returncode == 0, grow.stderr
    await loop.tick()
    blocked = psql(new_url, "INSERT INTO t VALUES (2)")
    assert blocked.returncode != 0 and "read-only" in blocked.stderr
    info = await http1.request("GET", base, headers=headers, context=context)
    assert json.loads(info.body)["read_only"] is True
    freed = psql(new_url, "SET transaction_read_only = off; DROP TABLE big")
    assert freed.returncode == 0, freed.stderr
    await loop.tick()
    assert psql(new_url, "INSERT INTO t VALUES (2)").returncode == 0

    reset = await http1.request("POST", f"{base}/actions/reset", headers=headers, context=context)
    assert reset.status == 200
    assert "does not exist" in psql(new_url, "SELECT n FROM t").stderr


async def test_backups_capture_restore_expire_and_delete(provider: Provider) -> None:
    """As pg:backups:* call them: a restore brings back the rows of its backup and
    drops what was made since; the plan keeps two, a third capture expires the
    oldest; deprovision leaves no dump behind."""
    record = provider.record(plan="tiny")
    url = await provision(provider, record)
    assert psql(url, "CREATE TABLE t AS SELECT 1 AS n").returncode == 0
    headers, context, base = partner_api(provider, record)

    async def act(action: str, argument: str = "") -> tuple[int, dict[str, object]]:
        return await run_action(provider, record, action, argument)

    status, body = await act("backup-restore")
    assert status == 409 and "no backups yet" in str(body["message"]), body
    assert await capture(provider, record) == "b001"
    assert psql(url, "INSERT INTO t VALUES (2); CREATE TABLE later (x int)").returncode == 0
    assert await capture(provider, record) == "b002"

    assert await restore(provider, record, "b001") == "b001"
    assert psql(url, "SELECT count(*) FROM t").stdout.strip() == "1"
    assert "does not exist" in psql(url, "SELECT * FROM later").stderr
    # Restored tables belong to the add-on's role: the app may still change them.
    assert psql(url, "ALTER TABLE t ADD COLUMN m int; DROP TABLE t").returncode == 0
    assert await restore(provider, record) == "b002"  # the latest
    assert psql(url, "SELECT count(*) FROM t").stdout.strip() == "2"

    assert await capture(provider, record) == "b003"  # the plan keeps 2: b001 expires
    info = json.loads((await http1.request("GET", base, headers=headers, context=context)).body)
    assert [b["id"] for b in info["backups"]] == ["b002", "b003"]
    status, body = await act("backup-restore", "b001")
    assert status == 404 and "b002, b003" in str(body["message"])
    assert (await act("backup-delete", "b002"))[0] == 200
    folder = provider.cluster.root / "backups" / record.id
    assert sorted(p.name for p in folder.iterdir()) == ["b003.dump"]

    gone = await provider.client.deprovision(provider.service, record)
    assert gone.outcome is Outcome.DONE
    assert not folder.exists()


async def test_scheduled_backups_run_daily_once_and_keep_seven_apart_from_manual_ones(
    provider: Provider,
) -> None:
    """pg:backups:schedule: the daemon's loop takes one backup per day at the time,
    whatever how often it looks, and expires the oldest scheduled one past 7."""
    record = provider.record(plan="tiny")
    url = await provision(provider, record)
    assert psql(url, "CREATE TABLE t AS SELECT 1 AS n").returncode == 0
    headers, context, base = partner_api(provider, record)

    async def act(action: str, argument: str = "") -> tuple[int, dict[str, object]]:
        return await run_action(provider, record, action, argument)

    status, body = await act("backup-schedule", "25:00")
    assert status == 422 and "not a time of day" in str(body["message"]), body
    assert (await act("backup-unschedule"))[0] == 409
    at = time.strftime("%H:%M", time.gmtime(time.time() - 3600))  # an hour ago: tomorrow first
    status, body = await act("backup-schedule", at)
    assert status == 200 and f"scheduled at {at} UTC" in str(body["message"]), body
    assert await capture(provider, record) == "b001"

    day = [0]
    loop = BackupScheduleLoop(
        provider.backend,
        provider.store,
        provider.server.lock,
        now=lambda: time.time() + day[0] * 86400,
    )
    assert await loop.tick() == [], "today's time has passed: the first is tomorrow"
    day[0] = 1
    assert await loop.tick() == ["a001"]
    await asyncio.gather(*provider.backend.tasks.values())
    assert await loop.tick() == [], "once a day"
    for n in range(2, 9):
        day[0] = n
        assert await loop.tick() == [f"a{n:03d}"]
        await asyncio.gather(*provider.backend.tasks.values())
    info = json.loads((await http1.request("GET", base, headers=headers, context=context)).body)
    assert info["backup_schedule"] == at
    ids = [b["id"] for b in info["backups"]]
    assert ids == ["b001"] + [f"a{n:03d}" for n in range(2, 9)], "a001 expired, b001 kept"
    # A scheduled backup restores like any other.
    assert psql(url, "DROP TABLE t").returncode == 0
    assert await restore(provider, record, "a008") == "a008"
    assert psql(url, "SELECT count(*) FROM t").stdout.strip() == "1"

    assert (await act("backup-unschedule"))[0] == 200
    day[0] = 20
    assert await loop.tick() == []


async def test_a_backup_downloads_in_chunks_byte_for_byte(provider: Provider) -> None:
    """What pg:backups:download relays: any range of a kept dump, nothing else."""
    record = provider.record(plan="tiny")
    url = await provision(provider, record)
    assert psql(url, "CREATE TABLE t AS SELECT generate_series(1, 5000) AS n").returncode == 0
    await capture(provider, record)
    dump = (provider.cluster.root / "backups" / record.id / "b001.dump").read_bytes()
    assert dump.startswith(b"PGDMP")
    got = b""
    while len(got) < len(dump):
        chunk = await provider.client.backup_chunk(provider.service, record, "b001", len(got), 4096)
        assert 0 < len(chunk) <= 4096
        got += chunk
    assert got == dump
    with pytest.raises(errors.NotFound, match="no backup 'b009'"):
        await provider.client.backup_chunk(provider.service, record, "b009", 0, 10)
    with pytest.raises(errors.Unavailable, match="length"):
        await provider.client.backup_chunk(provider.service, record, "b001", 0, 10**7)


async def test_backups_are_kept_in_the_object_store_and_come_back_from_it(
    provider: Provider, nats_url: str
) -> None:
    """With NATS, a backup is kept in the cluster's object store; the host's copy is
    only a cache: restore and download fetch it back when it is gone."""
    root = await objstore.connect([nats_url], credentials=secure.root())
    try:
        stores = objstore.ObjectStores(root.jetstream())
        await stores.ensure(objstore.ADDON_BACKUPS)  # as a controller does
        provider.backend.vault = BackupVault([nats_url], secure.bundle(pki.Role.ADDONS))
        record = provider.record(plan="tiny")
        url = await provision(provider, record)
        assert psql(url, "CREATE TABLE t AS SELECT 7 AS n").returncode == 0
        await capture(provider, record)
        name = f"{record.id}/b001.dump"
        assert await stores.exists(objstore.ADDON_BACKUPS, name)

        local = provider.cluster.root / "backups" / record.id / "b001.dump"
        local.unlink()  # the add-ons host lost its copy
        assert psql(url, "DROP TABLE t").returncode == 0
        assert await restore(provider, record, "b001") == "b001"
        assert psql(url, "SELECT n FROM t").stdout.strip() == "7"
        local.unlink()
        chunk = await provider.client.backup_chunk(provider.service, record, "b001", 0, 5)
        assert chunk == b"PGDMP"

        await capture(provider, record)
        assert (await run_action(provider, record, "backup-delete", "b001"))[0] == 200
        assert not await stores.exists(objstore.ADDON_BACKUPS, name)
        assert await stores.exists(objstore.ADDON_BACKUPS, f"{record.id}/b002.dump")
        gone = await provider.client.deprovision(provider.service, record)
        assert gone.outcome is Outcome.DONE
        assert not await stores.exists(objstore.ADDON_BACKUPS, f"{record.id}/b002.dump")
    finally:
        if provider.backend.vault is not None:
            await provider.backend.vault.close()
        await root.close()


async def test_a_capture_runs_in_the_background_one_at_a_time_and_a_restart_fails_it(
    provider: Provider,
) -> None:
    record = provider.record(plan="tiny")
    await provision(provider, record)
    resource = provider.store.get("postgresql", record.id)
    assert resource is not None
    started = provider.backend.start_capture(resource)
    assert started.message == "backup b001 started"
    (entry,) = resource.data["backups"]
    assert entry["state"] == "running"
    with pytest.raises(errors.FailedPrecondition, match="b001 of this database is still"):
        provider.backend.start_capture(resource)
    with pytest.raises(errors.FailedPrecondition, match="still being captured"):
        await provider.backend.read_backup(resource, "b001", 0, 10)
    provider.store.put(resource)
    await asyncio.gather(*provider.backend.tasks.values())
    done = provider.store.get("postgresql", record.id)
    assert done is not None and done.data["backups"][0]["state"] == "completed"
    assert provider.backend.start_restore(done, "").message.endswith("b001 started")
    with pytest.raises(errors.FailedPrecondition, match="b001 is being restored"):
        provider.backend.start_capture(done)
    provider.store.put(done)
    await asyncio.gather(*provider.backend.tasks.values())
    done = provider.store.get("postgresql", record.id)
    assert done is not None and done.data["restore"]["state"] == "completed"

    # A daemon that stopped mid-capture or mid-restore: the next one marks it
    # failed and says why.
    done.data["backups"].append({"id": "b002", "created_at": 1.0, "state": "running"})
    done.data["restore"] = {"backup": "b001", "state": "running", "at": 1.0}
    provider.store.put(done)
    provider.backend.bind(provider.store, provider.server.lock)
    after = provider.store.get("postgresql", record.id)
    assert after is not None
    assert after.data["backups"][1]["state"] == "failed"
    assert "interrupted" in after.data["backups"][1]["error"]
    assert after.data["restore"]["state"] == "failed"
    assert "partly restored" in after.data["restore"]["error"]
    with pytest.raises(errors.FailedPrecondition, match="b002 failed: interrupted"):
        await provider.backend.read_backup(after, "b002", 0, 10)
    assert (await run_action(provider, record, "backup-delete", "b002"))[0] == 200
