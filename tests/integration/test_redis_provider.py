"""The built-in Redis provider on real redis-servers, through its partner API
over HTTPS (the controller's own client makes the calls); apps are played by
redis-cli with nothing but the URL and the cluster CA."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.bus.addon_provider import ProviderClient
from controller.core.addons import AddonRecord, Outcome, ServiceRecord, parse_manifest
from slipway import engines, pki, tls
from slipway.providers import manifest
from slipway.providers.partner import PartnerServer, PlanSpec
from slipway.providers.redis import PLANS, RedisBackend, RedisFleet
from slipway.providers.resources import ResourceStore
from tests.harness import secure
from tests.harness.enginedirs import searchable_dir
from tests.harness.wait import eventually_async

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs redis-server as its own user")

MB = 1024 * 1024
TINY = PlanSpec("tiny", "3 MB, 3 connections", {"memory_bytes": 3 * MB, "connections": 3})
ROOMY = PlanSpec("roomy", "64 MB, 3 connections", {"memory_bytes": 64 * MB, "connections": 3})


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    with searchable_dir("slipway-redis-") as path:
        yield path


@dataclass
class Provider:
    client: ProviderClient
    server: PartnerServer
    fleet: RedisFleet
    store: ResourceStore
    service: ServiceRecord

    def record(self, plan: str = "mini") -> AddonRecord:
        return AddonRecord(
            id=str(uuid.uuid4()),
            name="redis-test-1",
            service="redis",
            plan=plan,
            app="shop",
            state="provisioning",
            created_at=0.0,
        )


def free_range(size: int) -> tuple[int, int]:
    """A run of ``size`` ports nothing listens on now (the provider checks each again)."""
    while True:
        low = engines.free_port()
        if low + size < 65535 and all(_free(port) for port in range(low, low + size)):
            return low, low + size - 1


def _free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
async def provider(state_dir: Path) -> AsyncIterator[Provider]:
    root = state_dir / uuid.uuid4().hex[:8]
    root.mkdir(mode=0o711)
    bundle = secure.bundle(pki.Role.ADDONS)
    store = ResourceStore(root / "resources")
    store.prepare()
    fleet = RedisFleet(
        root / "redis", store, address="127.0.0.1", bundle=bundle, plans=(*PLANS, TINY, ROOMY)
    )
    ports = free_range(8)
    backend = RedisBackend(fleet, "127.0.0.1", ports)
    password = manifest.service_password(root / "secrets", "redis")
    server = PartnerServer(
        {"redis": backend},
        {"redis": password},
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
        ports=f"{ports[0]}-{ports[1]}",
    )
    service = parse_manifest(json.dumps(doc), now=0.0)
    assert service.built_in and service.network_ports == f"{ports[0]}-{ports[1]}"
    serving = asyncio.create_task(server.run())
    supervising = asyncio.create_task(fleet.supervise(server.lock, interval=0.1))
    try:
        yield Provider(ProviderClient(), server, fleet, store, service)
    finally:
        serving.cancel()
        supervising.cancel()
        await fleet.stop_all()


def cli(
    url: str, *command: str, tls_on: bool = True, last: str | None = None
) -> subprocess.CompletedProcess[str]:
    """As an app would connect: the URL alone (and the cluster CA to check the server).

    redis-cli 7.0 reads Heroku's ``rediss://:PASSWORD@`` as the user "" (clients
    such as redis-py read it as the default user), so it gets the name spelled out."""
    argv = ["redis-cli", "-u", url.replace("://:", "://default:", 1), "--no-auth-warning"]
    if tls_on:
        argv += ["--cacert", str(secure.ca_file())]
    if last is not None:  # too long for argv: the last argument comes on stdin
        argv.append("-x")
    return subprocess.run([*argv, *command], capture_output=True, text=True, timeout=30, input=last)


async def provision(p: Provider, record: AddonRecord) -> str:
    answer = await p.client.provision(p.service, record, "https://127.0.0.1:1/unused")
    assert answer.outcome is Outcome.DONE, answer.message
    assert answer.config is not None
    return answer.config["REDIS_URL"]


async def test_provision_gives_a_private_server_with_tls(provider: Provider) -> None:
    first, second = provider.record(), provider.record()
    url = await provision(provider, first)
    other = await provision(provider, second)
    assert url.startswith("rediss://:") and url != other
    assert url.rpartition(":")[2] != other.rpartition(":")[2]  # a server each

    assert cli(url, "SET", "greeting", "hello").stdout.strip() == "OK"
    assert cli(url, "GET", "greeting").stdout.strip() == "hello"
    assert cli(other, "GET", "greeting").stdout.strip() == ""  # its own key space

    # Delivered again (at least once): the same server, the same credentials, the data kept.
    assert await provision(provider, first) == url
    assert cli(url, "GET", "greeting").stdout.strip() == "hello"

    # One add-on's password opens nothing on the other's server.
    password = url.split(":")[2].split("@")[0]
    foreign = other.replace(other.split(":")[2].split("@")[0], password)
    assert "WRONGPASS" in cli(foreign, "PING").stdout + cli(foreign, "PING").stderr
    # Without TLS the server does not answer Redis at all.
    plain = cli(url.replace("rediss://", "redis://"), "PING", tls_on=False)
    assert "PONG" not in plain.stdout
    # The plan's limits are not the app's to lift.
    denied = cli(url, "CONFIG", "SET", "maxmemory", "0")
    assert "NOPERM" in denied.stdout + denied.stderr
    assert "NOPERM" in cli(url, "SHUTDOWN").stdout


async def test_maxmemory_by_plan_policy_and_plan_change(provider: Provider) -> None:
    record = provider.record("tiny")
    url = await provision(provider, record)
    blob = "x" * (512 * 1024)

    def fill(count: int) -> str:
        out = ""
        for n in range(count):
            done = cli(url, "SET", f"k{n}", last=blob)
            out = done.stdout.strip()
            if out != "OK":
                return out
        return out

    assert fill(12).startswith("OOM")  # noeviction: the write is refused, nothing is lost
    assert cli(url, "EXISTS", "k0").stdout.strip() == "1"

    # The actions as redis:maxmemory calls them.
    done = await provider.client.action(provider.service, record, "maxmemory-policy", "allkeys-lru")
    assert done.outcome is Outcome.DONE, done.message
    assert fill(12) == "OK"  # the oldest keys make room now
    assert cli(url, "EXISTS", "k0").stdout.strip() == "0"
    refused = await provider.client.action(provider.service, record, "maxmemory-policy", "forget")
    assert refused.outcome is Outcome.REFUSED and "noeviction" in refused.message

    record.plan = "roomy"
    changed = await provider.client.change_plan(provider.service, record)
    assert changed.outcome is Outcome.DONE, changed.message
    info = await provider.client.details(provider.service, record)
    assert info["memory_limit_bytes"] == 64 * MB and info["maxmemory_policy"] == "allkeys-lru"
    assert int(str(info["keys"])) >= 1 and str(info["version"]).startswith("7")
    # Unknown options are refused before any server is made.
    other = provider.record()
    other.options = {"persistence": "off"}
    refused = await provider.client.provision(provider.service, other, "https://x/")
    assert refused.outcome is Outcome.REFUSED and "maxmemory_policy" in refused.message
    assert not provider.fleet.folder(other.id).exists()


async def test_rotate_survives_a_crash_and_deprovision_removes_the_server(
    provider: Provider,
) -> None:
    record = provider.record()
    url = await provision(provider, record)
    assert cli(url, "SET", "kept", "1").stdout.strip() == "OK"

    answer = await provider.client.action(provider.service, record, "rotate-credentials")
    assert answer.config is not None
    rotated = answer.config["REDIS_URL"]
    assert rotated != url
    assert "WRONGPASS" in cli(url, "PING").stderr
    assert cli(rotated, "GET", "kept").stdout.strip() == "1"

    server = provider.fleet.servers[record.id]
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)

    # Started again from the resource file: the new password, the data from the AOF.
    async def kept() -> bool:
        return (await asyncio.to_thread(cli, rotated, "GET", "kept")).stdout.strip() == "1"

    await eventually_async(kept, timeout=20)

    folder = provider.fleet.folder(record.id)
    gone = await provider.client.deprovision(provider.service, record)
    assert gone.outcome is Outcome.DONE, gone.message
    assert not folder.exists()
    assert "PONG" not in cli(rotated, "PING").stdout
