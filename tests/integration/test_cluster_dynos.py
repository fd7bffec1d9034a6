"""Issue 3 end to end: a real controller schedules formations onto real agents.

etcd, nats-server, runc, the controller and the agents are all real processes;
the slug is built by the test helper and stored in the object store, and the
release is created through the controller's API like a builder would.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import pytest

from slipway.keys import Keys
from slipway.v1 import types_pb2
from tests.harness import secure
from tests.harness.cluster import PRESENCE_TTL, AgentProcess, LocalCluster
from tests.harness.slugs import upload_slug
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def deploy(cluster: LocalCluster, app: str, greeting: str = "hello") -> int:
    slug = asyncio.run(upload_slug(cluster.controller.nats_url))
    with cluster.client() as client:
        client.update_config(app, {"GREETING": greeting})
        release = client.create_release(
            app,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
            {"web": slug.process_types["web"], "worker": slug.process_types["worker"]},
        ).release
    return int(release.version)


def dynos(cluster: LocalCluster, app: str) -> list[dict[str, object]]:
    out = cluster.controller.cli("ps", "-a", app, "--json", check=True).stdout
    return list(json.loads(out))


def up_web(cluster: LocalCluster, app: str) -> list[dict[str, object]]:
    return [d for d in dynos(cluster, app) if d["type"] == "web" and d["state"] == "up"]


def routes(cluster: LocalCluster, app: str) -> list[dict[str, object]]:
    keys = Keys(cluster.controller.prefix)

    async def read() -> list[dict[str, object]]:
        async with secure.root_etcd([cluster.controller.etcd_endpoint]) as etcd:
            kvs, _ = await etcd.get_prefix(keys.route_dynos(app))
            return [json.loads(kv.value) for kv in kvs]

    return asyncio.run(read())


def reconcile_passes(cluster: LocalCluster) -> int:
    with cluster.client() as client:
        return int(client.list_nodes().reconcile_passes)


def wait_reconcile_passes(cluster: LocalCluster, more: int = 3) -> None:
    """Until the leader has completed ``more`` full reconcile passes from now."""
    target = reconcile_passes(cluster) + more
    eventually(lambda: reconcile_passes(cluster) >= target, 60)


def node_lease(cluster: LocalCluster, node: str) -> int:
    """The etcd lease the node's presence key is under (0 when it has none)."""
    keys = Keys(cluster.controller.prefix)

    async def read() -> int:
        async with secure.root_etcd([cluster.controller.etcd_endpoint]) as etcd:
            kv = await etcd.get(keys.node(node))
            return kv.lease if kv else 0

    return asyncio.run(read())


def lease_alive(cluster: LocalCluster, lease: int) -> bool:
    async def read() -> bool:
        async with secure.root_etcd([cluster.controller.etcd_endpoint]) as etcd:
            return int((await etcd.raw.get_lease_info(lease, keys=False)).TTL) > 0

    return asyncio.run(read())


def http_get(address: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{address}/", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def test_formation_spreads_serves_and_scales_to_zero(cluster: LocalCluster) -> None:
    cluster.add_agent("node-a")
    cluster.add_agent("node-b")
    cli = cluster.controller.cli
    cli("apps:create", "spread", check=True)
    eventually(lambda: len(json.loads(cli("nodes", "--json", check=True).stdout)) == 2, 30)
    version = deploy(cluster, "spread", greeting="hi there")
    cli("ps:scale", "-a", "spread", "web=3", check=True)

    up = eventually(lambda: len(up_web(cluster, "spread")) == 3 and up_web(cluster, "spread"), 60)
    assert Counter(d["node"] for d in up).keys() == {"node-a", "node-b"}, "spread over both nodes"
    assert all(d["release"] == str(version) for d in up)
    containers = cluster.agents["node-a"].containers() + cluster.agents["node-b"].containers()
    assert len(containers) == 3

    found = eventually(
        lambda: len(routes(cluster, "spread")) == 3 and routes(cluster, "spread"), 30
    )
    seen_dynos = set()
    for route in found:
        body = http_get(str(route["address"]))
        assert body["greeting"] == "hi there"
        assert body["dyno"] == route["dyno"]
        seen_dynos.add(body["dyno"])
    assert seen_dynos == {"web.1", "web.2", "web.3"}

    table = cli("ps", "-a", "spread", check=True).stdout
    assert "web.1" in table and "up" in table and "node-" in table
    nodes = cli("nodes", check=True).stdout
    assert "node-a" in nodes and "node-b" in nodes

    cli("ps:scale", "-a", "spread", "web=0", check=True)
    eventually(lambda: not dynos(cluster, "spread"), 60)
    eventually(lambda: not routes(cluster, "spread"), 30)
    eventually(
        lambda: (
            not cluster.agents["node-a"].containers() and not cluster.agents["node-b"].containers()
        ),
        30,
    )


def runc_pids(agent: AgentProcess, container: str) -> list[int]:
    out = subprocess.run(
        ["runc", "--root", str(agent.runc_root), "ps", "--format", "json", container],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return sorted(json.loads(out.stdout or "[]"))


def last_tick(cluster: LocalCluster, app: str) -> int:
    out = cluster.controller.cli("logs", "-a", app, "--dyno", "worker.1", "-n", "20", check=True)
    ticks = [int(m) for m in re.findall(r"app\[worker\.1\]: tick (\d+)", out.stdout)]
    return max(ticks, default=-1)


def test_agent_kill9_and_restart_adopts_the_same_containers(cluster: LocalCluster) -> None:
    agent = cluster.add_agent("node-a")
    cli = cluster.controller.cli
    cli("apps:create", "adopt", check=True)
    deploy(cluster, "adopt")
    cli("ps:scale", "-a", "adopt", "web=2", "worker=1", check=True)
    eventually(lambda: len([d for d in dynos(cluster, "adopt") if d["state"] == "up"]) == 3, 60)
    node = json.loads(cli("nodes", "--json", check=True).stdout)[0]
    assert node["name"] == "node-a" and int(node["capacity_memory_mb"]) == agent.memory_mb
    eventually(
        lambda: (
            int(
                json.loads(cli("nodes", "--json", check=True).stdout)[0].get(
                    "memory_total_bytes", 0
                )
            )
            > 0
        ),
        30,
    )  # heartbeats arrive with host metrics
    before = sorted(agent.containers())
    instances = sorted(d["instance_id"] for d in dynos(cluster, "adopt"))
    pids = {cid: runc_pids(agent, cid) for cid in before}
    assert all(pids.values())
    eventually(lambda: last_tick(cluster, "adopt") >= 0, 30)
    old_lease = node_lease(cluster, "node-a")
    assert old_lease

    agent.kill9()
    # Killing the agent touches no dyno: they keep serving meanwhile.
    for route in routes(cluster, "adopt"):
        http_get(str(route["address"]))
    agent.start()
    # The killed agent's lease (presence, statuses, routes) expires; the leader
    # sees that and the new agent's reports and still replaces nothing.
    eventually(lambda: not lease_alive(cluster, old_lease), PRESENCE_TTL + 30)
    wait_reconcile_passes(cluster)
    eventually(lambda: len([d for d in dynos(cluster, "adopt") if d["state"] == "up"]) == 3, 30)
    assert sorted(agent.containers()) == before, "same containers, none duplicated"
    assert {cid: runc_pids(agent, cid) for cid in before} == pids, "same processes, not restarted"
    assert sorted(d["instance_id"] for d in dynos(cluster, "adopt")) == instances
    assert all(d.get("restarts", 0) == 0 for d in dynos(cluster, "adopt"))
    for route in routes(cluster, "adopt"):
        http_get(str(route["address"]))
    # The adopted worker's output still reaches the logs.
    seen = last_tick(cluster, "adopt")
    eventually(lambda: last_tick(cluster, "adopt") > seen + 3, 30)


def test_lost_node_dynos_move_and_routes_vanish(cluster: LocalCluster) -> None:
    cluster.add_agent("node-a")
    doomed = cluster.add_agent("node-b")
    cli = cluster.controller.cli
    cli("apps:create", "heal", check=True)
    eventually(lambda: len(json.loads(cli("nodes", "--json", check=True).stdout)) == 2, 30)
    deploy(cluster, "heal")
    cli("ps:scale", "-a", "heal", "web=2", check=True)
    eventually(lambda: {d["node"] for d in up_web(cluster, "heal")} == {"node-a", "node-b"}, 60)

    doomed.kill9()
    doomed.remove_containers()  # the host is gone with its dynos
    killed_at = time.monotonic()
    eventually(
        lambda: (
            len(up_web(cluster, "heal")) == 2
            and {d["node"] for d in up_web(cluster, "heal")} == {"node-a"}
        ),
        PRESENCE_TTL + 30,
    )
    print(f"replacement up {time.monotonic() - killed_at:.1f}s after kill -9 (TTL {PRESENCE_TTL}s)")
    eventually(lambda: {r["node"] for r in routes(cluster, "heal")} == {"node-a"}, 10)
    for route in routes(cluster, "heal"):
        http_get(str(route["address"]))


def test_controller_outage_changes_nothing(cluster: LocalCluster) -> None:
    agent = cluster.add_agent("node-a")
    cli = cluster.controller.cli
    cli("apps:create", "steady", check=True)
    deploy(cluster, "steady")
    cli("ps:scale", "-a", "steady", "web=2", check=True)
    eventually(lambda: len(up_web(cluster, "steady")) == 2, 60)
    before = {d["instance_id"]: d for d in dynos(cluster, "steady")}
    containers = sorted(agent.containers())
    addresses = [str(r["address"]) for r in routes(cluster, "steady")]

    cluster.controller.stop()
    deadline = time.monotonic() + 60
    served = 0
    while time.monotonic() < deadline:
        for address in addresses:
            assert http_get(address)["dyno"].startswith("web.")
            served += 1
        assert len(routes(cluster, "steady")) == 2, "routes stay while the controller is away"
        time.sleep(1)
    assert served > 0
    cluster.controller.start()

    wait_reconcile_passes(cluster)  # the new leader's first full passes
    after = {d["instance_id"]: d for d in dynos(cluster, "steady")}
    assert after.keys() == before.keys(), "nothing was replaced"
    assert all(d.get("restarts", 0) == before[i].get("restarts", 0) for i, d in after.items())
    assert sorted(agent.containers()) == containers


def test_new_release_replaces_every_dyno_without_dropping_to_zero(cluster: LocalCluster) -> None:
    cluster.add_agent("node-a")
    cluster.add_agent("node-b")
    cli = cluster.controller.cli
    cli("apps:create", "roll", check=True)
    first = deploy(cluster, "roll", greeting="one")
    cli("ps:scale", "-a", "roll", "web=2", check=True)
    eventually(lambda: len(up_web(cluster, "roll")) == 2, 60)

    fewest_routes = [99]
    failures: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            current = routes(cluster, "roll")
            fewest_routes[0] = min(fewest_routes[0], len(current))
            for route in current:
                try:
                    http_get(str(route["address"]))
                except OSError as exc:
                    # A route may be withdrawn between our read and the request.
                    if route in routes(cluster, "roll"):
                        failures.append(f"{route['address']}: {exc}")
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with cluster.client() as client:
            client.update_config("roll", {"GREETING": "two"})
        second = first + 1
        eventually(
            lambda: (
                len(up_web(cluster, "roll")) == 2
                and all(d["release"] == str(second) for d in dynos(cluster, "roll"))
            ),
            90,
        )
        eventually(
            lambda: (
                {http_get(str(r["address"]))["greeting"] for r in routes(cluster, "roll")}
                == {"two"}
            ),
            30,
        )
    finally:
        stop.set()
        watcher.join()
    assert fewest_routes[0] >= 1, "a web app never dropped to zero routed dynos"
    assert not failures


def test_restart_stop_and_drain(cluster: LocalCluster) -> None:
    cluster.add_agent("node-a")
    cluster.add_agent("node-b")
    cli = cluster.controller.cli
    cli("apps:create", "ops", check=True)
    eventually(lambda: len(json.loads(cli("nodes", "--json", check=True).stdout)) == 2, 30)
    deploy(cluster, "ops")
    cli("ps:scale", "-a", "ops", "web=2", check=True)
    eventually(lambda: len(up_web(cluster, "ops")) == 2, 60)

    before = {d["name"]: d["instance_id"] for d in dynos(cluster, "ops")}
    out = cli("ps:restart", "-a", "ops", "web.1", check=True).stdout
    assert "Restarting web.1 on ops... done" in out
    gaps: list[list[dict[str, object]]] = []

    def restarted() -> bool:
        """web.1 runs as a new instance; until then an up web.1 serves (preboot)."""
        web1 = [d for d in dynos(cluster, "ops") if d["name"] == "web.1"]
        if not any(d["state"] == "up" for d in web1):
            gaps.append(web1)
        return (
            len(web1) == 1
            and web1[0]["instance_id"] != before["web.1"]
            and web1[0]["state"] == "up"
        )

    eventually(restarted, 60)
    assert not gaps, f"web.1 had no up dyno during its restart: {gaps}"
    after = {d["name"]: d["instance_id"] for d in dynos(cluster, "ops")}
    assert after["web.1"] != before["web.1"] and after["web.2"] == before["web.2"]

    out = cli("ps:stop", "-a", "ops", "web.2", check=True).stdout
    assert "Stopping web.2 on ops... done" in out
    eventually(
        lambda: (
            {d["name"]: d["instance_id"] for d in up_web(cluster, "ops")}.get("web.2")
            not in (None, after["web.2"])
        ),
        60,
    )
    missing = cli("ps:restart", "-a", "ops", "clock")
    assert missing.returncode == 1 and "no dyno or process type 'clock'" in missing.stderr

    out = cli("nodes:drain", "node-a", "--wait", "--timeout", "60", check=True).stdout
    assert "node-a is drained" in out
    assert {d["node"] for d in up_web(cluster, "ops")} == {"node-b"}
    nodes = {n["name"]: n for n in json.loads(cli("nodes", "--json", check=True).stdout)}
    assert nodes["node-a"]["status"] == "draining"
    cli("nodes:undrain", "node-a", check=True)
    nodes = {n["name"]: n for n in json.loads(cli("nodes", "--json", check=True).stdout)}
    assert nodes["node-a"]["status"] == "ready"
    unknown = cli("nodes:drain", "node-zz")
    assert unknown.returncode == 1 and "no node 'node-zz'" in unknown.stderr


def test_a_slug_of_a_stack_no_node_runs_is_not_started_and_the_log_says_why(
    cluster: LocalCluster,
) -> None:
    cluster.add_agent("node-s")
    app = "stacked"
    cluster.controller.cli("apps:create", app, check=True)
    slug = asyncio.run(upload_slug(cluster.controller.nats_url))
    with cluster.client() as client:
        eventually(lambda: any(n.name == "node-s" for n in client.list_nodes().nodes), 30)
        node = next(n for n in client.list_nodes().nodes if n.name == "node-s")
        assert node.stack == "slipway-24"
        client.create_release(
            app,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-26"),
            {"web": slug.process_types["web"]},
        )
    cluster.controller.cli("ps:scale", "web=1", "-a", app, check=True)

    def explained() -> bool:
        out = cluster.controller.cli("logs", "-a", app, "--source", "heroku", "-n", "50").stdout
        return "Cannot start web.1: no node runs stack slipway-26" in out

    eventually(explained, 60)
    assert dynos(cluster, app) == []
    listed = cluster.controller.cli("nodes", check=True).stdout
    assert "STACK" in listed and "slipway-24" in listed
