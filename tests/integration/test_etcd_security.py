"""etcd on TLS with client certificates, sealed by slipway.etcdauth: who may do what.

One real etcd for the module, started with an ENGINE bundle and sealed with a
ROOT one (tests/harness/etcd_tls.py); every client presents a certificate of
the test CA whose CN is its etcd user.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aetcd import rpc

from agent.model import DynoState, DynoStatus
from agent.presence import Presence
from slipway import engines, errors, etcdauth, pki
from slipway.etcd import CLUSTER_NAME, Etcd
from slipway.keys import Keys
from slipway.records import NodeRecord
from tests.harness.etcd_tls import SealedEtcd, sealed_etcd
from tests.harness.pki import ClusterPKI
from tests.harness.wait import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEYS = Keys()


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SealedEtcd]:
    with sealed_etcd(tmp_path_factory.mktemp("etcd-tls")) as etcd:
        yield etcd


async def controller_of(sealed: SealedEtcd) -> Etcd:
    client = sealed.client(pki.Role.CONTROLLER)
    await client.connect()
    return client


def web_dyno(instance: str, port: int) -> DynoStatus:
    return DynoStatus(
        app="demo",
        name="web.1",
        instance_id=instance,
        process_type="web",
        release=1,
        state=DynoState.UP,
        port=port,
        changed_at=time.time(),
    )


def presence_of(etcd: Etcd, node: str, dynos: list[DynoStatus]) -> Presence:
    record = NodeRecord(name=node, address="127.0.0.1", capacity_mb=512)
    return Presence(etcd, KEYS, record, lambda: list(dynos), ttl=5, interval=0.05)


async def test_a_plaintext_client_is_refused(sealed: SealedEtcd) -> None:
    async with Etcd([sealed.plain_endpoint], timeout=2) as plain:
        with pytest.raises(errors.Unavailable, match="--credentials"):
            await plain.get(KEYS.config("demo"))
    with pytest.raises(errors.FailedPrecondition, match="speaks TLS"):
        Etcd([sealed.endpoint])


async def test_certificates_of_another_ca_are_refused(sealed: SealedEtcd, tmp_path: Path) -> None:
    foreign = sealed.pki.foreign()
    async with Etcd([sealed.endpoint], credentials=foreign, timeout=2) as client:
        with pytest.raises(errors.Unauthenticated, match="same cluster CA"):
            await client.get(KEYS.config("demo"))
    # Trusting etcd's CA is not enough: etcd checks our certificate too.
    mixed = pki.write_bundle(
        tmp_path / "mixed",
        ca_pem=sealed.pki.ca_file.read_bytes(),
        cert_pem=foreign.cert_pem(),
        key_pem=foreign.key_pem(),
    )
    async with Etcd([sealed.endpoint], credentials=mixed, timeout=2) as client:
        with pytest.raises(errors.Unauthenticated, match="same cluster CA"):
            await client.put(KEYS.config("demo"), b"{}")


async def test_a_router_reads_routes_and_nothing_else(sealed: SealedEtcd) -> None:
    controller = await controller_of(sealed)
    await controller.put(KEYS.route_app("ro"), b'{"app": "ro"}')
    await controller.put(KEYS.config("ro"), b'{"SECRET": "x"}')
    async with sealed.client(pki.Role.ROUTER) as router:
        kvs, revision = await router.get_prefix(KEYS.routes())
        assert KEYS.route_app("ro") in {kv.key for kv in kvs}
        events = router.watch_prefix(KEYS.routes(), revision + 1)
        await controller.put(KEYS.route_app("ro"), b'{"app": "ro", "web": 2}')
        event = await asyncio.wait_for(anext(events), 10)
        assert (event.kind, event.key) == ("put", KEYS.route_app("ro"))
        await events.aclose()
        for key in (KEYS.route_app("ro"), KEYS.route_dyno("ro", "x"), KEYS.config("ro")):
            with pytest.raises(errors.PermissionDenied, match="permission denied"):
                await router.put(key, b"{}")
        with pytest.raises(errors.PermissionDenied):
            await router.delete(KEYS.route_app("ro"))
        for read in (KEYS.config("ro"), KEYS.token("abc"), KEYS.node("n1")):
            with pytest.raises(errors.PermissionDenied):
                await router.get(read)
        with pytest.raises(errors.PermissionDenied):
            await router.get_prefix(KEYS.config(""))
    await controller.close()


async def test_a_node_writes_its_own_records_under_its_lease(sealed: SealedEtcd) -> None:
    controller = await controller_of(sealed)
    await etcdauth.ensure_node(controller, sealed.prefix, "n1")
    async with sealed.client(pki.Role.NODE, "n1") as n1:
        lease = await n1.lease(10)
        await n1.put(KEYS.node("n1"), b"{}", lease=lease.id)
        await n1.put(KEYS.status("demo", "i1"), b"{}", lease=lease.id)
        await n1.put(KEYS.route_dyno("demo", "i1"), b"{}", lease=lease.id)
        assert await n1.refresh_lease(lease.id) > 0
        assert await n1.delete(KEYS.route_dyno("demo", "i1"))
        for key in (
            KEYS.node("n2"),
            KEYS.node("n1x"),  # nodes/n1 is a key, not a prefix
            KEYS.config("demo"),
            KEYS.token("abc"),
            KEYS.dyno("demo", "i1"),
            KEYS.route_app("demo"),
        ):
            with pytest.raises(errors.PermissionDenied):
                await n1.put(key, b"{}", lease=lease.id)
        with pytest.raises(errors.PermissionDenied):
            await n1.get(KEYS.config("demo"))
        # Revoking a lease deletes its keys, so it needs write access to all of them.
        await n1.revoke_lease(lease.id)
        assert await controller.get(KEYS.node("n1")) is None
        assert await controller.get(KEYS.status("demo", "i1")) is None
        other = await controller.lease(30)
        await controller.put(KEYS.config("held"), b"{}", lease=other.id)
        with pytest.raises(errors.PermissionDenied):
            await n1.revoke_lease(other.id)
        assert await controller.get(KEYS.config("held")) is not None
        await controller.revoke_lease(other.id)
    await controller.close()


async def test_the_agents_presence_works_on_a_sealed_etcd(sealed: SealedEtcd) -> None:
    controller = await controller_of(sealed)
    await etcdauth.ensure_node(controller, sealed.prefix, "n4")
    dynos = [web_dyno("p1", 5000)]
    async with sealed.client(pki.Role.NODE, "n4") as n4:
        presence = presence_of(n4, "n4", dynos)
        task = asyncio.create_task(presence.run())
        try:
            await asyncio.wait_for(presence.registered.wait(), 10)

            async def route_present() -> bool:
                return await controller.get(KEYS.route_dyno("demo", "p1")) is not None

            await eventually_async(route_present)
            status = await controller.get(KEYS.status("demo", "p1"))
            assert status is not None and json.loads(status.value)["node"] == "n4"
            dynos.clear()

            async def route_gone() -> bool:
                return await controller.get(KEYS.route_dyno("demo", "p1")) is None

            await eventually_async(route_gone)
            await presence.withdraw()
            assert await controller.get(KEYS.node("n4")) is None
        finally:
            task.cancel()
    await controller.close()


async def test_a_builder_can_do_nothing(sealed: SealedEtcd) -> None:
    async with sealed.client(pki.Role.BUILDER) as builder:
        for key in (KEYS.config("demo"), KEYS.route_app("demo"), KEYS.build("demo", "b1")):
            with pytest.raises(errors.PermissionDenied):
                await builder.get(key)
            with pytest.raises(errors.PermissionDenied):
                await builder.put(key, b"{}")
        with pytest.raises(errors.PermissionDenied):
            await builder.get_prefix(KEYS.prefix.encode())


async def test_the_controller_does_everything_and_admits_nodes(sealed: SealedEtcd) -> None:
    controller = await controller_of(sealed)
    for key in (KEYS.config("c"), KEYS.token("t"), KEYS.formation("c"), KEYS.route_app("c")):
        await controller.put(key, b"{}")
        assert await controller.get(key) is not None
    assert await controller.revision() > 0  # a read outside the prefix
    assert await controller.create(KEYS.node("n3"), b"{}")
    assert await controller.delete(KEYS.node("n3"))
    async with sealed.client(pki.Role.NODE, "n3") as n3:
        with pytest.raises(errors.PermissionDenied):
            await n3.put(KEYS.node("n3"), b"{}")
        await etcdauth.ensure_node(controller, sealed.prefix, "n3")
        await etcdauth.ensure_node(controller, sealed.prefix, "n3")  # again: harmless
        presence = presence_of(n3, "n3", [web_dyno("c1", 5001)])
        task = asyncio.create_task(presence.run())
        try:
            await asyncio.wait_for(presence.registered.wait(), 10)
            assert await controller.get(KEYS.node("n3")) is not None
        finally:
            task.cancel()
        await presence.withdraw()
        await etcdauth.remove_node(controller, "n3")
        await etcdauth.remove_node(controller, "n3")  # again: harmless
        with pytest.raises(errors.PermissionDenied):
            await n3.put(KEYS.node("n3"), b"{}")
    await controller.close()


def controller_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_seal_again_is_harmless_and_repairs_roles(sealed: SealedEtcd) -> None:
    controller = await controller_of(sealed)
    # Someone widened the router's role by hand.
    extra = rpc.Permission(
        permType=rpc.Permission.READWRITE,
        key=KEYS.config("").rstrip(b"/"),
        range_end=b"",
    )
    await controller.auth(
        "RoleGrantPermission",
        rpc.AuthRoleGrantPermissionRequest(name=etcdauth.ROUTER_ROLE, perm=extra),
    )
    root = sealed.pki.bundle(pki.Role.ROOT)
    engine = ["--etcd", sealed.endpoint, "--etcd-prefix", sealed.prefix]
    done = await asyncio.to_thread(
        controller_cli, "etcd", "seal", "--credentials", str(root.path), *engine
    )
    assert done.returncode == 0, done.stderr
    assert "role router: revoked READWRITE /slipway/config" in done.stdout
    assert "sealed" in done.stdout
    async with sealed.client(pki.Role.ROUTER) as router:
        assert await router.get_prefix(KEYS.routes())
        with pytest.raises(errors.PermissionDenied):
            await router.get(KEYS.config("").rstrip(b"/"))
    again = await asyncio.to_thread(
        controller_cli, "etcd", "seal", "--credentials", str(root.path), *engine
    )
    assert again.returncode == 0, again.stderr
    assert "added" not in again.stdout and "revoked" not in again.stdout
    # Sealing another prefix of the same etcd leaves this one's permissions be.
    async with sealed.client(pki.Role.ROOT) as root_client:
        await etcdauth.seal(root_client, "/other")
    async with sealed.client(pki.Role.ROUTER) as router:
        assert await router.get_prefix(KEYS.routes())
        assert (await router.get_prefix(Keys("/other").routes()))[0] == []
    # The operator's tools work on the sealed etcd with the root bundle...
    token = await asyncio.to_thread(
        controller_cli,
        "tokens",
        "create",
        "--name",
        "ops",
        "--credentials",
        str(root.path),
        *engine,
    )
    assert token.returncode == 0, token.stderr
    assert (await controller.get_prefix(KEYS.tokens()))[0]
    # ...and seal wants a root bundle, not any certificate.
    node = sealed.pki.bundle(pki.Role.NODE, "n1")
    refused = await asyncio.to_thread(
        controller_cli, "etcd", "seal", "--credentials", str(node.path), *engine
    )
    assert refused.returncode != 0 and "root bundle" in refused.stderr
    await controller.close()


async def test_a_controller_daemon_leads_on_a_sealed_etcd(
    sealed: SealedEtcd, nats_url: str, tmp_path: Path
) -> None:
    port = engines.free_port()
    bundle = sealed.pki.bundle(pki.Role.CONTROLLER)
    argv = [sys.executable, "-m", "controller", "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--etcd", sealed.endpoint, "--etcd-prefix", sealed.prefix, "--nats", nats_url]
    daemon = engines.Engine(
        "controller", [*argv, "--credentials", str(bundle.path)], tmp_path, "127.0.0.1", port
    )
    await asyncio.to_thread(daemon.start)
    controller = await controller_of(sealed)
    try:

        async def leading() -> bool:
            leader = await controller.get(KEYS.leader())
            return leader is not None and f"127.0.0.1:{port}".encode() in leader.value

        await eventually_async(leading, timeout=20)
    finally:
        daemon.stop()
        await controller.close()


async def test_a_tls_cluster_of_three_keeps_serving_when_a_member_dies(tmp_path: Path) -> None:
    """Peers on https; a client of all three checks each against CLUSTER_NAME."""
    cluster_pki = ClusterPKI(tmp_path / "pki")
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    ports = {h: (engines.free_port(h), engines.free_port(h)) for h in hosts}
    initial = ",".join(f"m{i}=http://{h}:{ports[h][1]}" for i, h in enumerate(hosts))
    members = [
        engines.etcd(
            tmp_path / f"m{i}",
            host=h,
            client_port=ports[h][0],
            peer_port=ports[h][1],
            name=f"m{i}",
            initial_cluster=initial,
            tls=cluster_pki.bundle(pki.Role.ENGINE, hosts=(h, CLUSTER_NAME)),
        )
        for i, h in enumerate(hosts)
    ]
    try:
        for member in members:
            await asyncio.to_thread(member.start)
        endpoints = [f"https://{h}:{ports[h][0]}" for h in hosts]
        async with Etcd(endpoints, credentials=cluster_pki.bundle(pki.Role.ROOT)) as client:

            async def written() -> bool:
                try:
                    await client.put(b"/k", b"v")
                except errors.Unavailable:  # no leader yet
                    return False
                return True

            await eventually_async(written, timeout=20)
            members[0].kill()
            for _ in range(6):  # round robin: every live member answers
                got = await client.get(b"/k")
                assert got is not None and got.value == b"v"
    finally:
        for member in members:
            member.stop()


async def test_writes_made_while_nodes_join_are_never_refused(sealed: SealedEtcd) -> None:
    # Every role or user change bumps etcd's auth revision; a request that
    # arrived before the bump and is applied after it is refused ("revision of
    # auth store is old"). The client must try it again: a node joining must
    # not fail the writes the platform makes at that moment.
    controller = await controller_of(sealed)
    admin = await controller_of(sealed)
    joined = asyncio.Event()

    async def churn() -> None:
        for _ in range(6):
            for n in range(3):
                await etcdauth.ensure_node(admin, sealed.prefix, f"churn{n}")
            for n in range(3):
                await etcdauth.remove_node(admin, f"churn{n}")
        joined.set()

    async def write(writer: int) -> int:
        done = 0
        while not joined.is_set():
            await controller.put(KEYS.config(f"w{writer}"), str(done).encode())
            done += 1
        return done

    try:
        results = await asyncio.gather(churn(), *(write(w) for w in range(4)))
        writes = results[1:]
        assert all(done > 0 for done in writes)
        for w, done in enumerate(writes):
            kv = await controller.get(KEYS.config(f"w{w}"))
            assert kv is not None and kv.value == str(done - 1).encode()
    finally:
        await admin.close()
        await controller.close()
