"""The sandboxes' firewall: one nftables table per agent or builder, planned purely.

``ruleset(spec)`` turns what should be allowed (the sandboxes on the bridge,
their web ports, the resolvers, the routers) into the full text of the table;
``apply`` replaces the table with it in one nft transaction, so a pass is
idempotent and a restarted agent restores every rule by applying its plan
again. Nothing else writes to the table.

What the rules say (``BR`` is the sandboxes' bridge; ``ct established`` lets
replies through):

    input    from BR: DNS to the resolvers, add-on grants, the routers' public
             listeners (``public_ports``); everything else to the host dropped:
             no etcd, NATS, controller, agent, metrics or SSH, on any host address
    forward  from BR: add-on grants, DNS; BR -> BR dropped (dyno to dyno through
             the gateway; the bridge ports are isolated for the direct path);
             ``denied`` ranges dropped (link-local/metadata, loopback, multicast,
             the operator's platform network); IPv6 dropped; the rest is egress
             (masqueraded by the bridge plugin)
             to BR: only a web sandbox's address and port, only through a host
             port mapping (DNAT), only from ``router_sources``
    output   to BR: only a web sandbox's address and port (the node's own
             routers and the agent's up probe); nothing else of the host
             opens connections into a sandbox

Add-on hook: ``AddonGrant(app, address, port)`` lets every sandbox of ``app``
open TCP connections to ``address:port`` (before the drops above).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from slipway import errors
from slipway.cni import tools

# Never reachable from a sandbox, whatever the operator adds.
ALWAYS_DENIED = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local: cloud metadata services live here
    "224.0.0.0/4",
    "240.0.0.0/4",
)


@dataclass(frozen=True)
class Sandboxed:
    """One sandbox on the bridge."""

    address: str
    app: str = ""
    web_port: int = 0  # reachable by routers on this port; 0: nothing reaches it


@dataclass(frozen=True)
class AddonGrant:
    """The hook of the add-ons issue: the sandboxes of ``app`` may reach address:port."""

    app: str
    address: str
    port: int


@dataclass(frozen=True)
class FirewallSpec:
    table: str
    bridge: str
    sandboxes: tuple[Sandboxed, ...] = ()
    resolvers: tuple[str, ...] = ()
    public_ports: tuple[int, ...] = ()
    router_sources: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    grants: tuple[AddonGrant, ...] = field(default=())


def addon_allows(
    sandboxes: Iterable[Sandboxed], grants: Iterable[AddonGrant]
) -> list[tuple[str, str, int]]:
    """(sandbox address, add-on address, port) for every sandbox of a granted app."""
    out = set()
    for grant in grants:
        for s in sandboxes:
            if s.app and s.app == grant.app:
                out.add((s.address, grant.address, grant.port))
    return sorted(out)


def _elements(items: Iterable[str]) -> str:
    values = list(items)
    return f" elements = {{ {', '.join(values)} }}" if values else ""


def _set(name: str, type_: str, items: Iterable[str], *, interval: bool = False) -> list[str]:
    flags = " flags interval;" if interval else ""
    body = f"type {type_};{flags}{_elements(items)}"
    return [f"\tset {name} {{ {body} }}"]


def _cidrs(values: Iterable[str]) -> list[str]:
    nets = sorted(
        {ipaddress.ip_network(v, strict=False) for v in values if ":" not in v},
        key=lambda n: (int(n.network_address), n.prefixlen),
    )
    # nft refuses overlapping interval elements: keep only the outermost.
    kept: list[ipaddress.IPv4Network] = []
    for n in nets:
        assert isinstance(n, ipaddress.IPv4Network)
        if not any(n.subnet_of(k) for k in kept):
            kept.append(n)
    return [str(n) for n in kept]


def ruleset(spec: FirewallSpec) -> str:
    """The whole table as nft text (pure; unit-tested)."""
    br = f'"{spec.bridge}"'
    web = sorted(f"{s.address} . {s.web_port}" for s in spec.sandboxes if s.web_port)
    addons = [f"{a} . {b} . {p}" for a, b, p in addon_allows(spec.sandboxes, spec.grants)]
    resolvers = sorted({r for r in spec.resolvers if ":" not in r})
    lines = [f"table inet {spec.table} {{"]
    lines += _set("web", "ipv4_addr . inet_service", web)
    lines += _set("addons", "ipv4_addr . ipv4_addr . inet_service", addons)
    lines += _set("resolvers", "ipv4_addr", resolvers)
    lines += _set("public", "inet_service", (str(p) for p in sorted(set(spec.public_ports))))
    lines += _set("routers", "ipv4_addr", _cidrs(spec.router_sources), interval=True)
    lines += _set("denied", "ipv4_addr", _cidrs((*ALWAYS_DENIED, *spec.denied)), interval=True)
    lines += [
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 5; policy accept;",
        f"\t\tiifname {br} ct state established,related accept",
        f"\t\tiifname {br} ip daddr @resolvers meta l4proto {{ tcp, udp }} th dport 53 accept",
        f"\t\tiifname {br} ip saddr . ip daddr . tcp dport @addons accept",
        f"\t\tiifname {br} tcp dport @public accept",
        f"\t\tiifname {br} counter drop",
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter - 5; policy accept;",
        f"\t\tiifname {br} oifname != {br} ct state established,related accept",
        f"\t\toifname {br} iifname != {br} ct state established,related accept",
        f"\t\tiifname {br} ip saddr . ip daddr . tcp dport @addons accept",
        f"\t\tiifname {br} ip daddr @resolvers meta l4proto {{ tcp, udp }} th dport 53 accept",
        f"\t\tiifname {br} oifname {br} counter drop",
        f"\t\tiifname {br} ip daddr @denied counter drop",
        f"\t\tiifname {br} meta nfproto ipv6 counter drop",
        f"\t\tiifname {br} accept",
        f"\t\toifname {br} ct status dnat ip saddr @routers ip daddr . tcp dport @web accept",
        f"\t\toifname {br} counter drop",
        "\t}",
        "\tchain output {",
        "\t\ttype filter hook output priority filter - 5; policy accept;",
        f"\t\toifname {br} ct state established,related accept",
        f"\t\toifname {br} ip daddr . tcp dport @web accept",
        f"\t\toifname {br} counter drop",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def replace_script(spec: FirewallSpec) -> str:
    """One nft transaction: make sure the table exists, drop it, write it anew."""
    return f"table inet {spec.table} {{}}\ndelete table inet {spec.table}\n" + ruleset(spec)


async def _nft(script: str, *args: str) -> str:
    return await tools.run("nft", *args, stdin=script)


async def apply(spec: FirewallSpec) -> None:
    """Replace the table with the plan's rules (atomic: one transaction)."""
    await _nft(replace_script(spec), "-f", "-")


async def remove(table: str) -> None:
    """Delete the table (tests, and an operator turning sandbox networking off)."""
    await _nft(f"table inet {table} {{}}\ndelete table inet {table}\n", "-f", "-")


async def listing(table: str) -> str:
    """``nft list table`` text ("" when the table does not exist)."""
    try:
        return await _nft("", "list", "table", "inet", table)
    except errors.FailedPrecondition:
        return ""
