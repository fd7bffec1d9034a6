"""Issue 7's "Done when": faults across simulated hosts while load runs.

One cluster serves the module (see ``harness.py`` for the topology). An app
runs web=4 from the test slug; during every test a client sends ~25 requests
a second through both routers (``load.py``) and counts what failed. Each test
puts back what it broke (restarts the killed process or plugs the host back
in), so the next one starts from the full topology.

The figures (requests sent, failed, time to recover) are printed and repeated
in assertion messages.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from slipway.v1 import platform_pb2 as pb
from slipway.v1 import types_pb2
from tests.harness.slugs import upload_slug
from tests.harness.wait import eventually
from tests.multihost.harness import BASE_DOMAIN, BIN, MultiHostCluster
from tests.multihost.load import Load

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(900)]

APP = "loadapp"
WEB = 4
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Issue 7's targets (a new leader within 10 s, replacements within 15 s) are
# printed in each report line, not asserted: these machines are shared and noisy.

DynoIds = dict[str, tuple[str, int, str]]


def report(test: str, load: Load, **figures: object) -> str:
    extra = " ".join(
        f"{k}={v:.1f}s" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    line = f"[multihost] {test}: {load.summary()} {extra}".rstrip()
    print(line)
    return line


def web_dynos(cluster: MultiHostCluster, app: str = APP) -> list[pb.Dyno]:
    with cluster.client() as client:
        return [d for d in client.list_dynos(app).dynos if d.type == "web"]


def up_web(cluster: MultiHostCluster, app: str = APP) -> list[pb.Dyno]:
    return [d for d in web_dynos(cluster, app) if d.state == "up"]


def identities(cluster: MultiHostCluster) -> DynoIds:
    """What must not change when no dyno restarts: instance, restart count, node."""
    return {d.name: (d.instance_id, d.restarts, d.node) for d in web_dynos(cluster)}


def router_addresses(cluster: MultiHostCluster) -> list[str]:
    return [r.address for r in cluster.routers.values() if r.running]


def serves_every_dyno(cluster: MultiHostCluster, router: str, expected: set[str]) -> bool:
    """True once requests through ``router`` have reached every dyno in ``expected``."""
    probe = Load(f"{APP}.{BASE_DOMAIN}", [router], rate=50, max_seconds=1.0, timeout=10)
    with probe:
        probe.finish()
    assert not probe.failures(), probe.summary()
    return expected <= probe.dynos_seen()


def wait_for_traffic(load: Load, more: int, timeout: float = 60) -> None:
    base = load.sent
    eventually(lambda: load.sent >= base + more, timeout, 0.1)


def create_web_app(cluster: MultiHostCluster, app: str, web: int) -> None:
    """``app`` released with the test slug and scaled to ``web`` web dynos."""
    slug = asyncio.run(upload_slug(cluster.nats_urls.split(",")[0]))
    with cluster.client() as client:
        client.create_app(app)
        client.create_release(
            app,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
            {"web": slug.process_types["web"]},
        )
        client.scale(app, [pb.FormationChange(type="web", quantity=web)])


@pytest.fixture(scope="module")
def web_app(mh_cluster: MultiHostCluster) -> Iterator[MultiHostCluster]:
    """APP with WEB up web dynos spread over the agents, served by both routers."""
    cluster = mh_cluster
    create_web_app(cluster, APP, WEB)

    def all_up() -> list[pb.Dyno]:
        up = up_web(cluster)
        return up if len(up) == WEB else []

    up = eventually(all_up, 120, 0.5)
    names = {d.name for d in up}
    for router in router_addresses(cluster):
        eventually(partial(serves_every_dyno, cluster, router, names), 60, 0.2)
    print(f"[multihost] {APP}: web={WEB} on {sorted(d.node for d in up)}")
    yield cluster


def start_slow_deploy(
    cluster: MultiHostCluster, app: str, first: str = ""
) -> subprocess.Popen[str]:
    """``slipway deploy`` of an app whose build compiles for about 6 s; returns once compiling."""
    cluster.cli("apps:create", app)
    cluster.cli("buildpacks:set", str(FIXTURES / "slow-buildpack"), "-a", app)
    deploy = subprocess.Popen(
        [str(BIN / "slipway"), "deploy", str(FIXTURES / "hello-app"), "-a", app],
        env=cluster.cli_env(first),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with cluster.client() as client:

        def compiling() -> bool:
            builds = list(client.list_builds(app).builds)
            # Running on a named builder: the job has been taken.
            return bool(
                builds and builds[0].status == pb.BUILD_STATUS_RUNNING and builds[0].builder
            )

        try:
            eventually(compiling, 60, 0.2)
        except BaseException:
            deploy.kill()
            deploy.wait()
            raise
    return deploy


def finish(deploy: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return deploy.communicate(timeout=240)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()


def test_leader_controller_killed(web_app: MultiHostCluster) -> None:
    cluster = web_app
    before = identities(cluster)
    old = cluster.leader()
    assert old in cluster.controllers, f"leader key holds {old!r}"
    with Load(f"{APP}.{BASE_DOMAIN}", router_addresses(cluster)) as load:
        wait_for_traffic(load, 50)
        # A deploy follows its build output from the controller about to die:
        # the CLI must carry on from the other one.
        deploy = start_slow_deploy(cluster, "ctlkill", first=old)
        cluster.controllers[old].kill9()
        killed = time.monotonic()
        new = eventually(lambda: (lead := cluster.leader()) not in ("", old) and lead, 30, 0.1)
        takeover = time.monotonic() - killed
        out, err = finish(deploy)
        # Let the new leader run its full reconcile (resync 1 s) under load.
        wait_for_traffic(load, 100)
    line = report(
        "kill -9 leader controller",
        load,
        old=old,
        new=new,
        new_leader_after=takeover,
        deploy_rc=deploy.returncode,
    )
    assert not load.failures(), line
    assert identities(cluster) == before, f"a dyno restarted or moved: {line}"
    assert deploy.returncode == 0 and "Released v" in out, f"{line}\n{out}\n{err}"
    assert out.count("step 1\n") == 1, f"a line was shown twice after the failover:\n{out}"
    cluster.cli("ps:scale", "-a", "ctlkill", "web=0")
    cluster.start_controller(old)


def test_etcd_member_and_nats_server_killed_during_deploy(web_app: MultiHostCluster) -> None:
    cluster = web_app
    app = "etcdnats"
    with Load(f"{APP}.{BASE_DOMAIN}", router_addresses(cluster)) as load:
        deploy = start_slow_deploy(cluster, app)
        try:
            etcd_victim = cluster.etcd.leader()  # the member whose loss hurts most
            cluster.etcd.kill(etcd_victim)
            killed = time.monotonic()
            # The survivors elect a new raft leader among themselves.
            eventually(lambda: cluster.etcd.leader() != etcd_victim, 30, 0.1)
            etcd_recovered = time.monotonic() - killed
            wait_for_traffic(load, 25)
            # The server leading the build queue: the deploy depends on it most.
            nats_victim = cluster.nats.stream_leader("BUILDS")
            cluster.nats.kill(nats_victim)
        finally:
            out, err = finish(deploy)
        wait_for_traffic(load, 50)
    try:
        line = report(
            "kill -9 etcd member, then NATS server, during a deploy",
            load,
            etcd=etcd_victim,
            nats=nats_victim,
            etcd_leader_after=etcd_recovered,
            deploy_rc=deploy.returncode,
        )
        assert deploy.returncode == 0 and "Released v" in out, f"{line}\n{out}\n{err}"
        assert not load.failures(), line
        cluster.cli("ps:scale", "-a", app, "web=0")
    finally:
        # Put the members back even when an assertion failed: the module's later
        # tests need the full topology, and must not fail for this test's reason.
        cluster.etcd.restart(etcd_victim)
        cluster.nats.restart(nats_victim)


def test_builder_killed_mid_build(web_app: MultiHostCluster) -> None:
    cluster = web_app
    app = "buildfail"
    with Load(f"{APP}.{BASE_DOMAIN}", router_addresses(cluster)) as load:
        deploy = start_slow_deploy(cluster, app)
        with cluster.client() as client:
            try:
                build = client.list_builds(app).builds[0]
                cluster.builders[build.builder].kill9()
                killed = time.monotonic()
            finally:
                out, err = finish(deploy)
            finished = time.monotonic() - killed
            final = client.get_build(app, build.id).build
    line = report(
        "kill -9 builder mid-build",
        load,
        killed=build.builder,
        finished_by=final.builder,
        attempts=final.attempts,
        released_after=finished,
    )
    try:
        assert deploy.returncode == 0 and "Released v" in out, f"{line}\n{out}\n{err}"
        assert final.status == pb.BUILD_STATUS_SUCCEEDED, line
        assert final.builder != build.builder and final.attempts == 2, line
        assert not load.failures(), line
        cluster.cli("ps:scale", "-a", app, "web=0")
    finally:
        cluster.start_builder(build.builder)


def test_router_killed_and_new_router_learns_table(web_app: MultiHostCluster) -> None:
    cluster = web_app
    victim, survivor = cluster.routers["router-1"], cluster.routers["router-2"]
    with Load(f"{APP}.{BASE_DOMAIN}", router_addresses(cluster)) as load:
        wait_for_traffic(load, 50)
        # The client stops choosing the doomed router first: a request that was
        # on the wire to it when it died is the client's loss, not the platform's.
        load.targets[:] = [survivor.address]
        eventually(lambda: load.in_flight(victim.address) == 0, 30, 0.05)
        victim.kill9()
        wait_for_traffic(load, 100)
        fresh = cluster.start_router("router-3")
        started = time.monotonic()
        names = {d.name for d in up_web(cluster)}
        eventually(lambda: serves_every_dyno(cluster, fresh.address, names), 30, 0.2)
        learned = time.monotonic() - started
        load.targets[:] = [survivor.address, fresh.address]
        wait_for_traffic(load, 50)
    line = report(
        "kill -9 router",
        load,
        survivor_failed=len(load.failures(survivor.address)),
        new_router_served_all_after=learned,
        dynos=len(names),
    )
    assert len(names) == WEB, line
    assert not load.failures(), line
    assert load.dynos_seen() >= names, line
    cluster.routers.pop("router-1")


def test_host_network_taken_away(web_app: MultiHostCluster) -> None:
    cluster = web_app
    by_node: dict[str, int] = {}
    for d in up_web(cluster):
        by_node[d.node] = by_node.get(d.node, 0) + 1
    lost = max(by_node, key=lambda n: by_node[n])  # the host that hurts most
    host = cluster.hosts[lost]
    with Load(f"{APP}.{BASE_DOMAIN}", router_addresses(cluster)) as load:
        wait_for_traffic(load, 50)
        host.unplug()
        unplugged = time.monotonic()

        def replaced() -> bool:
            up = up_web(cluster)
            return len(up) == WEB and all(d.node != lost for d in up)

        eventually(replaced, 60, 0.2)
        replacement = time.monotonic() - unplugged
        # Keep the load on while the routers drop the lost dynos from their tables.
        wait_for_traffic(load, 100)
        stranded = len(cluster.running_containers(lost))
        # The host comes back: its stranded dynos were replaced, so they must stop,
        # and their stale routes must not come back.
        host.plug()
        eventually(lambda: not cluster.running_containers(lost), 60, 0.2)
        wait_for_traffic(load, 50)
    line = report(
        "host network taken away",
        load,
        host=lost,
        dynos_on_host=by_node[lost],
        replacements_up_after=replacement,
        stranded_while_away=stranded,
    )
    assert not load.failures(), line
    assert len(up_web(cluster)) == WEB, line


def test_ps_restart_of_a_single_web_dyno_fails_no_request(web_app: MultiHostCluster) -> None:
    """Preboot: ``ps:restart`` of a web=1 app starts the new dyno before stopping the old."""
    cluster = web_app
    app = "preboot"
    create_web_app(cluster, app, 1)
    try:
        first = eventually(lambda: up_web(cluster, app), 120, 0.5)[0]
        host = f"{app}.{BASE_DOMAIN}"

        def routed(router: str) -> bool:
            probe = Load(host, [router], rate=20, max_seconds=0.5, timeout=10)
            with probe:
                probe.finish()
            return bool(probe.dynos_seen()) and not probe.failures()

        for router in router_addresses(cluster):
            eventually(partial(routed, router), 60, 0.2)
        with Load(host, router_addresses(cluster)) as load:
            wait_for_traffic(load, 50)
            cluster.cli("ps:restart", "-a", app)
            asked = time.monotonic()

            def replaced() -> bool:
                web = web_dynos(cluster, app)
                return (
                    len(web) == 1
                    and web[0].instance_id != first.instance_id
                    and (web[0].state == "up")
                )

            eventually(replaced, 60, 0.2)
            swapped = time.monotonic() - asked
            wait_for_traffic(load, 100)
        line = report("ps:restart web=1", load, old_stopped_after=swapped)
        assert not load.failures(), line
    finally:
        with cluster.client() as client:
            client.destroy_app(app, app)
