"""The sandboxes' firewall plan and the CNI configs, as pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.model import DynoSpec
from agent.network import sandboxes
from agent.records import DynoRecord
from slipway.cni.firewall import AddonGrant, FirewallSpec, Sandboxed, addon_allows, ruleset
from slipway.cni.plugins import Network, host_interfaces, result_address
from slipway.cni.sandboxnet import resolvers

BR = "swbrtest"


def spec(**kw: object) -> FirewallSpec:
    values: dict[str, object] = {"table": "slipway_t", "bridge": BR}
    values.update(kw)
    return FirewallSpec(**values)  # type: ignore[arg-type]


def set_line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(f"set {name} "))


def chain(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"chain {name} {{")
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "}")
    return [line.strip() for line in lines[start + 1 : end]]


def test_only_web_sandboxes_get_a_port_element() -> None:
    text = ruleset(
        spec(
            sandboxes=(
                Sandboxed("10.240.0.3", "a", 20001),
                Sandboxed("10.240.0.2", "b", 0),
                Sandboxed("10.240.0.4", "b", 20002),
            )
        )
    )
    assert "elements = { 10.240.0.3 . 20001, 10.240.0.4 . 20002 }" in set_line(text, "web")
    assert "10.240.0.2" not in text


def test_empty_plan_still_denies_everything_from_the_bridge() -> None:
    text = ruleset(spec())
    assert "elements" not in set_line(text, "web")
    assert chain(text, "input")[-1] == f'iifname "{BR}" counter drop'
    assert f'iifname "{BR}" oifname "{BR}" counter drop' in chain(text, "forward")
    assert chain(text, "forward")[-1] == f'oifname "{BR}" counter drop'
    assert chain(text, "output")[-1] == f'oifname "{BR}" counter drop'


def test_drops_come_after_the_allows_they_must_not_shadow() -> None:
    fwd = chain(ruleset(spec()), "forward")
    index = {rule: i for i, rule in enumerate(fwd)}

    def at(fragment: str) -> int:
        return next(i for rule, i in index.items() if fragment in rule)

    last_drop = fwd.index(f'oifname "{BR}" counter drop')
    dyno_to_dyno = fwd.index(f'iifname "{BR}" oifname "{BR}" counter drop')
    egress = fwd.index(f'iifname "{BR}" accept')
    assert at("@addons") < dyno_to_dyno
    assert at("@resolvers") < at("@denied")
    assert dyno_to_dyno < egress and at("@denied") < egress  # egress only after the denials
    assert at("@web") < last_drop


def test_web_ports_reach_only_from_routers_through_the_port_mapping() -> None:
    fwd = chain(ruleset(spec(router_sources=("10.0.0.41/32",))), "forward")
    allow = [r for r in fwd if "@web" in r]
    assert allow == [
        f'oifname "{BR}" ct status dnat ip saddr @routers ip daddr . tcp dport @web accept'
    ]


def test_link_local_and_loopback_are_always_denied_and_intervals_do_not_overlap() -> None:
    text = ruleset(spec(denied=("169.254.169.254/32", "10.0.0.0/8", "10.1.0.0/16")))
    denied = set_line(text, "denied")
    assert "169.254.0.0/16" in denied and "127.0.0.0/8" in denied
    assert "169.254.169.254" not in denied  # inside 169.254.0.0/16: nft refuses overlaps
    assert "10.0.0.0/8" in denied and "10.1.0.0/16" not in denied


def test_public_ports_and_resolvers() -> None:
    text = ruleset(spec(public_ports=(443, 80, 443), resolvers=("10.255.255.53", "fd00::53")))
    assert "elements = { 80, 443 }" in set_line(text, "public")
    assert "elements = { 10.255.255.53 }" in set_line(text, "resolvers")
    assert f'iifname "{BR}" tcp dport @public accept' in chain(text, "input")


def test_addon_grants_reach_only_the_dynos_of_the_granted_app() -> None:
    boxes = (Sandboxed("10.240.0.2", "shop", 0), Sandboxed("10.240.0.3", "blog", 20001))
    grants = (AddonGrant("shop", "10.9.0.5", 5432),)
    assert addon_allows(boxes, grants) == [("10.240.0.2", "10.9.0.5", 5432)]
    text = ruleset(spec(sandboxes=boxes, grants=grants))
    assert "elements = { 10.240.0.2 . 10.9.0.5 . 5432 }" in set_line(text, "addons")
    assert f'iifname "{BR}" ip saddr . ip daddr . tcp dport @addons accept' in chain(text, "input")


def test_plan_is_deterministic() -> None:
    boxes = (Sandboxed("10.240.0.3", "a", 20001), Sandboxed("10.240.0.2", "a", 20000))
    assert ruleset(spec(sandboxes=boxes)) == ruleset(spec(sandboxes=tuple(reversed(boxes))))


def record(app: str, name: str, address: str, port: int) -> DynoRecord:
    ptype = name.split(".")[0]
    dyno = DynoSpec(app=app, name=name, process_type=ptype, release=1, command="x")
    return DynoRecord(spec=dyno, container_id=f"c-{name}", port=port, address=address)


def test_sandboxes_from_records() -> None:
    got = sandboxes(
        [
            record("a", "web.1", "10.240.0.3", 20001),
            record("a", "worker.1", "10.240.0.2", 0),
            record("a", "web.2", "", 20002),  # not attached (stopped, or host networking)
        ]
    )
    assert got == (Sandboxed("10.240.0.2", "a", 0), Sandboxed("10.240.0.3", "a", 20001))


def test_plugin_conf_injects_version_name_prev_result_and_only_declared_capabilities() -> None:
    net = Network(
        name="n",
        plugins=({"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": True}}),
        runtime_config={"portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "tcp"}]},
    )
    first = net.plugin_conf(0, None)
    assert first == {"cniVersion": "1.0.0", "name": "n", "type": "bridge"}
    second = net.plugin_conf(1, {"ips": []})
    assert second["prevResult"] == {"ips": []}
    assert second["runtimeConfig"]["portMappings"][0]["hostPort"] == 1
    assert "capabilities" not in second


def test_result_parsing() -> None:
    result = {
        "interfaces": [
            {"name": "swbr1", "mac": "x"},
            {"name": "veth1234", "mac": "y"},
            {"name": "eth0", "mac": "z", "sandbox": "/run/netns/n"},
        ],
        "ips": [{"address": "fd00::2/64"}, {"address": "10.240.0.2/24", "interface": 2}],
    }
    assert result_address(result) == "10.240.0.2"
    assert host_interfaces(result) == ["swbr1", "veth1234"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("nameserver 10.0.0.2\nnameserver 1.1.1.1\n", ["10.0.0.2", "1.1.1.1"]),
        ("nameserver 127.0.0.53\n", []),  # systemd-resolved without its upstream file
        ("# none\n", []),
        ("nameserver fd00::1\nnameserver 10.0.0.2\n", ["10.0.0.2"]),
    ],
)
def test_resolvers(tmp_path: Path, text: str, want: list[str]) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(text)
    if want == [] and "127.0.0.53" in text and Path("/run/systemd/resolve/resolv.conf").exists():
        pytest.skip("this host has systemd-resolved's upstream file")
    assert resolvers(conf) == want
