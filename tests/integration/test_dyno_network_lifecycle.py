"""Dyno networks over their whole life: nothing leaks, restarts restore, failures undo.

Real runc, real CNI plugins, real nftables; the supervisor runs in this process
(as in test_agent_runtime.py), so an "agent restart" is leaving one
``running_node`` and entering another.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.model import DynoState
from slipway import errors
from slipway.cni import NetOptions, SandboxNetwork
from slipway.cni.sandboxnet import NETNS_DIR, _in_use, sweep_iptables
from tests.harness.slugs import Slug
from tests.harness.wait import eventually_async
from tests.integration.test_agent_runtime import app_name as app_name
from tests.integration.test_agent_runtime import (
    cleanup_containers,
    fast_config,
    http_get,
    running_node,
    spec,
)
from tests.integration.test_agent_runtime import slug as slug

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROUNDS = 20
PER_ROUND = 10  # 5 web + 5 worker: 200 dyno start/stop cycles in all


def _out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


def leftovers(net: SandboxNetwork, prefix: str) -> dict[str, object]:
    """Everything a dyno's network could leave behind; all empty when nothing leaked."""
    leases = [
        p.name
        for p in (net.ipam_dir / "slipway").glob("*")
        if p.name not in ("lock",) and not p.name.startswith("last_reserved_ip")
    ]
    web = _out("nft", "-j", "list", "set", "inet", net.table, "web")
    elements = json.loads(web)["nftables"][1]["set"].get("elem", []) if web else []
    return {
        "attachments": sorted(p.name for p in net.attachments_dir.glob("*.json")),
        "leases": sorted(leases),
        "netns": sorted(e.name for e in NETNS_DIR.iterdir() if e.name.startswith(net.netns_prefix))
        if NETNS_DIR.is_dir()
        else [],
        "veths": _out("ip", "-o", "link", "show", "master", net.bridge).split("\n")[:-1],
        "web rules": elements,
        "iptables": [line for line in _out("iptables-save").splitlines() if prefix in line],
    }


NOTHING = {
    "attachments": [],
    "leases": [],
    "netns": [],
    "veths": [],
    "web rules": [],
    "iptables": [],
}


def rule_count(net: SandboxNetwork) -> int:
    listing = _out("nft", "-a", "list", "table", "inet", net.table)
    return listing.count("# handle") - listing.count("set ")


async def test_200_start_stop_cycles_leave_no_lease_rule_netns_or_veth(
    data_dir: Path,
    nats_url: str,
    slug: Slug,
    app_name: str,
):
    config = fast_config(data_dir, nats_url)
    try:
        async with running_node(config, nats_url, app_name) as node:
            net = node.sup.rt.network
            assert net is not None
            rules_before = rule_count(net.net)
            assert rules_before > 0
            for round_ in range(ROUNDS):
                specs = [
                    spec(slug, f"{kind}.{i}", app_name)
                    for kind in ("web", "worker")
                    for i in range(1, PER_ROUND // 2 + 1)
                ]
                await node.sup.set_desired(specs)

                async def all_up() -> bool:
                    snap = node.sup.snapshot()
                    return len(snap) == PER_ROUND and all(s.state is DynoState.UP for s in snap)

                await eventually_async(all_up, timeout=120)
                if round_ == 0:
                    addresses = [d.record.address for d in node.sup._dynos.values()]
                    assert all(addresses) and len(set(addresses)) == PER_ROUND
                    assert len(leftovers(net.net, config.container_prefix)["web rules"]) == 5
                await node.sup.set_desired([])

                async def all_gone() -> bool:
                    return node.sup.snapshot() == []

                await eventually_async(all_gone, timeout=120)
            assert leftovers(net.net, config.container_prefix) == NOTHING
            assert rule_count(net.net) == rules_before
    finally:
        await cleanup_containers(config.state_root, config.data_dir)


async def test_agent_restart_checks_adopted_dynos_and_restores_the_firewall(
    data_dir: Path,
    nats_url: str,
    slug: Slug,
    app_name: str,
):
    config = fast_config(data_dir, nats_url)
    web = spec(slug, "web.1", app_name)
    try:
        async with running_node(config, nats_url, app_name) as first:
            await first.sup.set_desired([web])
            up = await first.wait_state("web.1", DynoState.UP)
            pids = await first.sup.rt.runc.ps(up.container_id)
            net = first.sup.rt.network
            assert net is not None
            table = net.net.table
        # While the "agent" is away its table is lost (a flush, a reboot of the rules).
        await asyncio.to_thread(_out, "nft", "delete", "table", "inet", table)
        assert _out("nft", "list", "table", "inet", table) == ""

        async with running_node(config, nats_url, app_name) as second:
            # CHECK passed: the same container keeps running, and the rules are back.
            again = await second.wait_state("web.1", DynoState.UP)
            assert again.container_id == up.container_id and again.restarts == 0
            assert await asyncio.to_thread(http_get, up.port)
            assert second.sup.rt.network is not None
            mine = second.sup.rt.network.net
            assert len(leftovers(mine, config.container_prefix)["web rules"]) == 1
            record = second.sup._dynos[web.key].record
            await second.sup.rt.network.check(record)  # what adoption ran: it passes
            assert await second.sup.rt.runc.ps(up.container_id) == pids  # not restarted
            assert not any("R99" in m for m in second.messages("web.1", "heroku"))
            broken = mine.load(record.container_id)
            assert broken is not None and broken.result is not None
            veth = [
                i["name"]
                for i in broken.result["interfaces"]
                if not i.get("sandbox") and i["name"] != mine.bridge
            ]

        # The dyno's cable is cut while the agent is away: CHECK fails on adoption,
        # the dyno is restarted with a fresh network (DEL of the old one, whose
        # rules the bridge plugin cannot find without the interface: swept by id).
        await asyncio.to_thread(_out, "ip", "link", "del", veth[0])
        assert veth[0] not in await asyncio.to_thread(_out, "ip", "-o", "link")
        async with running_node(config, nats_url, app_name) as third:
            await third.wait_log("web.1", "Error R99 (Platform error)")

            async def restarted() -> bool:
                s = third.status("web.1")
                return bool(s and s.state is DynoState.UP and s.restarts >= 1)

            await eventually_async(restarted, timeout=60)
            assert await asyncio.to_thread(http_get, up.port)
            left = leftovers(mine, config.container_prefix)
            assert len(left["leases"]) == 1 and len(left["netns"]) == 1  # type: ignore[arg-type]
            await third.sup.set_desired([])
            await eventually_async(lambda: asyncio.sleep(0, third.sup.snapshot() == []), 60)
            assert leftovers(mine, config.container_prefix) == NOTHING
    finally:
        await cleanup_containers(config.state_root, config.data_dir)


async def test_failed_add_is_undone_by_del(tmp_path: Path) -> None:
    """A /28 holds 13 sandboxes besides the gateway: the 14th ADD fails in IPAM,
    and the DEL that follows leaves no netns, lease, veth or attachment behind."""
    used = _in_use()
    free = next(
        str(n)
        for n in ipaddress.IPv4Network("10.247.0.0/16").subnets(new_prefix=28)
        if not any(n.overlaps(u) for u in used)
    )
    net = SandboxNetwork(tmp_path / "net", NetOptions(subnet=free))
    net.prepare()
    try:
        done = [await net.attach(f"fill{i}") for i in range(13)]
        assert {ipaddress.ip_address(a.address) in ipaddress.ip_network(free) for a in done} == {
            True
        }
        with pytest.raises(errors.SlipwayError):
            await net.attach("one-too-many")
        assert net.load("one-too-many") is None
        assert not (NETNS_DIR / net.netns_name("one-too-many")).exists()
        left = leftovers(net, "fill")
        assert len(left["leases"]) == 13 and len(left["veths"]) == 13  # type: ignore[arg-type]
        for att in done:
            await net.detach(att)
        assert {k: v for k, v in leftovers(net, "fill").items() if k != "web rules"} == {
            k: v for k, v in NOTHING.items() if k != "web rules"
        }
    finally:
        await net.destroy()


async def test_del_after_the_namespace_vanished_leaves_nothing(tmp_path: Path) -> None:
    """After a reboot the netns is gone but leases (on disk) and the plugins' rules
    (restored by the host's firewall service) are not: DEL with the stored result
    releases the lease, and the rules the bridge plugin can no longer attribute
    are swept by container id."""
    net = SandboxNetwork(tmp_path / "net")
    net.prepare()
    try:
        att = await net.attach("rebooted-dyno", port=0)
        assert len(leftovers(net, "rebooted-dyno")["iptables"]) > 0  # type: ignore[arg-type]
        await asyncio.to_thread(_out, "ip", "netns", "del", att.netns)
        await net.detach(att)
        assert leftovers(net, "rebooted-dyno") == NOTHING
    finally:
        await net.destroy()


async def test_a_bridge_left_from_an_earlier_life_of_the_state_dir_is_replaced(
    tmp_path: Path,
) -> None:
    """An agent killed before its clean-up leaves its bridge; a state dir made again
    at the same path picks a new subnet and must still attach (the bridge plugin
    refuses a bridge addressed in another subnet)."""
    state = tmp_path / "net"
    first = SandboxNetwork(state)
    first.prepare()
    old = first.subnet
    await first.attach("before")
    shutil.rmtree(state)  # the attachments are gone too

    again = SandboxNetwork(state)
    again.prepare()
    try:
        assert again.bridge == first.bridge and again.subnet != old
        att = await again.attach("after")
        assert ipaddress.ip_address(att.address) in again.subnet  # type: ignore[operator]
    finally:
        await again.destroy()
        await asyncio.to_thread(_out, "ip", "netns", "del", first.netns_name("before"))
        await sweep_iptables("before")
