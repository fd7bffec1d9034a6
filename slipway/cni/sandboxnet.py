"""A network namespace of its own for every sandbox, wired by CNI plugins.

One ``SandboxNetwork`` per agent (dynos) or builder (build steps). It owns,
all derived from its state directory so two agents on one host never meet:

    bridge      swbr{h}             the sandboxes' bridge (made by the bridge plugin)
    subnet      a free /24          persisted in DIR/subnet, claimed host-wide
    netns       /run/netns/swns{h}-{id}   one per sandbox
    table       inet slipway_{h}    the nftables table (slipway.cni.firewall)
    DIR/attachments/{cid}.json      per sandbox: netns, port, the stored ADD result
    DIR/ipam/                       host-local's leases

The network list run for each sandbox (``ifname`` eth0):
``bridge`` (gateway .1, ipMasq for egress, host-local IPAM) -> ``portmap``
(web dynos: HOST:PORT -> sandbox:PORT) -> ``firewall`` (FORWARD accepts on
hosts whose policy drops), plus ``loopback`` for ``lo``.

Lifecycle: ``attach`` writes the attachment (intent) first, makes the netns,
runs ADD, isolates the bridge port and stores the result; any failure runs
DEL and removes the netns before raising. ``detach`` always runs DEL (with the
stored result, or without one after a failed ADD) and removes netns and
record; it is idempotent. ``check`` runs CHECK (adoption after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slipway import engines, errors, log
from slipway.cni import firewall, tools
from slipway.cni.plugins import Cni, CniError, Network, Target, host_interfaces, result_address

logger = log.get("slipway.cni")

NETNS_DIR = Path("/run/netns")
CLAIMS_DIR = Path("/run/slipway-cni/subnets")
# Where automatic subnets come from: /24s of 10.240.0.0/13.
POOL = ipaddress.IPv4Network("10.240.0.0/13")
IFNAME = "eth0"


def _tag(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


def resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The IPv4 nameservers a sandbox should use.

    A loopback resolver (systemd-resolved's 127.0.0.53) is the host's own and
    unreachable from a sandbox; its upstream servers are used instead.
    """
    found = _nameservers(resolv_conf)
    if found and all(ipaddress.ip_address(a).is_loopback for a in found):
        found = _nameservers(Path("/run/systemd/resolve/resolv.conf"))
    return [a for a in found if not ipaddress.ip_address(a).is_loopback]


def _nameservers(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(parts[1]).version == 4:
                    out.append(parts[1])
    return out


def resolv_conf_text(servers: list[str]) -> bytes:
    """The sandboxes' /etc/resolv.conf."""
    return "".join(f"nameserver {s}\n" for s in servers).encode()


@dataclass
class Attachment:
    """One sandbox's network, as stored on disk (DIR/attachments/{cid}.json)."""

    container_id: str
    netns: str
    port: int = 0
    result: dict[str, Any] | None = None  # the ADD result; None until ADD succeeded

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def address(self) -> str:
        return result_address(self.result or {})


@dataclass(frozen=True)
class NetOptions:
    """What the operator may set; empty values get safe defaults."""

    subnet: str = ""  # "" = a free /24 chosen once and kept
    public_ports: tuple[int, ...] = ()  # routers' listeners on this host sandboxes may call
    router_sources: tuple[str, ...] = ()  # besides this host: who may reach web ports
    denied: tuple[str, ...] = ()  # destinations sandboxes may never reach (platform network)
    plugin_dir: Path = Path("/usr/lib/cni")


class SandboxNetwork:
    def __init__(self, state_dir: Path, options: NetOptions | None = None) -> None:
        self.dir = state_dir
        self.options = options or NetOptions()
        tag = _tag(state_dir)
        self.bridge = f"swbr{tag}"
        self.table = f"slipway_{tag}"
        self.netns_prefix = f"swns{tag}-"
        self.cni = Cni(self.options.plugin_dir)
        self.subnet: ipaddress.IPv4Network | None = None
        self.resolvers: list[str] = []
        self._applied: str | None = None
        self._fw_lock = asyncio.Lock()

    # ----- set-up ------------------------------------------------------------

    @property
    def attachments_dir(self) -> Path:
        return self.dir / "attachments"

    @property
    def ipam_dir(self) -> Path:
        return self.dir / "ipam"

    def _known_subnet(self) -> ipaddress.IPv4Network:
        """The prepared subnet; before ``prepare`` (clean-up only) the kept one."""
        if self.subnet is None:
            try:
                self.subnet = ipaddress.IPv4Network((self.dir / "subnet").read_text().strip())
            except (OSError, ValueError):
                return next(POOL.subnets(new_prefix=24))
        return self.subnet

    @property
    def gateway(self) -> str:
        return str(self._known_subnet().network_address + 1)

    def prepare(self) -> None:
        """Check the plugins, pick (or re-read) the subnet, read the resolvers. Blocking."""
        reason = self.cni.available()
        if reason:
            raise errors.FailedPrecondition(reason, reason="cni_missing")
        for tool in ("nft", "ip", "bridge", "iptables"):
            engines.find_binary(tool)
        self.attachments_dir.mkdir(parents=True, exist_ok=True)
        self.ipam_dir.mkdir(parents=True, exist_ok=True)
        self.subnet = claim_subnet(self.dir, self.options.subnet)
        self._drop_stale_bridge(self.subnet)
        self.resolvers = resolvers()
        logger.info(
            "sandbox network",
            bridge=self.bridge,
            subnet=str(self.subnet),
            table=self.table,
            resolvers=",".join(self.resolvers),
        )

    def _drop_stale_bridge(self, subnet: ipaddress.IPv4Network) -> None:
        """Delete our bridge when it is a leftover addressed outside ``subnet``.

        Its name comes from the state dir's path, so a state dir made again at the
        same path (a wiped data dir, an agent killed before its clean-up) meets the
        bridge of its earlier life, addressed in an earlier subnet, and the bridge
        plugin refuses every ADD. With no attachment on record nothing of ours
        uses it.
        """
        gateway = ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
        found = bridge_addresses(self.bridge)
        if not found or found == [gateway] or self.load_all():
            return
        logger.warning(
            "removing a leftover sandbox bridge",
            bridge=self.bridge,
            addresses=",".join(map(str, found)),
            subnet=str(subnet),
        )
        tools.run_sync("ip", "link", "del", self.bridge)

    def network(self, port: int) -> Network:
        subnet = self._known_subnet()
        mappings = [{"hostPort": port, "containerPort": port, "protocol": "tcp"}] if port else []
        return Network(
            name="slipway",
            plugins=(
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(subnet), "gateway": self.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
                {"type": "firewall", "backend": "iptables"},
            ),
            runtime_config={"portMappings": mappings},
        )

    @staticmethod
    def loopback() -> Network:
        return Network(name="slipway-lo", plugins=({"type": "loopback"},))

    def netns_name(self, container_id: str) -> str:
        return self.netns_prefix + hashlib.sha256(container_id.encode()).hexdigest()[:12]

    # ----- one sandbox -------------------------------------------------------

    def _path(self, container_id: str) -> Path:
        return self.attachments_dir / f"{container_id}.json"

    def _save(self, att: Attachment) -> None:
        path = self._path(att.container_id)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(asdict(att), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load(self, container_id: str) -> Attachment | None:
        try:
            data = json.loads(self._path(container_id).read_text())
            return Attachment(**data)
        except (OSError, ValueError, TypeError):
            return None

    def load_all(self) -> list[Attachment]:
        out = []
        if self.attachments_dir.is_dir():
            for p in sorted(self.attachments_dir.glob("*.json")):
                att = self.load(p.stem)
                if att is not None:
                    out.append(att)
        return out

    async def attach(self, container_id: str, *, port: int = 0) -> Attachment:
        """A fresh netns with an address, egress and (``port``) a host port mapping."""
        stale = self.load(container_id)
        if stale is not None:
            await self.detach(stale)
        att = Attachment(container_id, self.netns_name(container_id), port)
        self._save(att)  # intent first: a crash from here on is found and undone
        try:
            await _exec("ip", "netns", "add", att.netns)
            target = Target(container_id, str(att.netns_path), "lo")
            await self.cni.add(self.loopback(), target)
            target = Target(container_id, str(att.netns_path), IFNAME)
            att.result = await self.cni.add(self.network(port), target)
            for name in host_interfaces(att.result):
                if name != self.bridge:
                    # Sandboxes never talk to each other on the bridge (the plugin
                    # has no option for it in Debian 12's version).
                    await _exec("bridge", "link", "set", "dev", name, "isolated", "on")
            self._save(att)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.detach(att))
            if isinstance(exc, errors.SlipwayError):
                raise
            if isinstance(exc, Exception):
                raise errors.FailedPrecondition(f"sandbox network failed: {exc}") from exc
            raise
        return att

    async def check(self, att: Attachment) -> None:
        """CHECK of an adopted sandbox: raises CniError when its network is broken."""
        if att.result is None:
            raise CniError("no stored ADD result")
        if not att.netns_path.exists():
            raise CniError(f"network namespace {att.netns} is gone")
        await self.cni.check(
            self.network(att.port),
            Target(att.container_id, str(att.netns_path), IFNAME),
            att.result,
            known_bug=_portmap_ipv6_check,
        )
        for name in host_interfaces(att.result):
            if name != self.bridge:
                await _exec("bridge", "link", "set", "dev", name, "isolated", "on")

    async def detach(self, att: Attachment) -> None:
        """DEL (always, also for a half-made attachment), then the netns and the record."""
        # A namespace already gone (a reboot) is passed as "": plugins then release what
        # lives outside it (leases, host rules) as the spec asks.
        netns = str(att.netns_path) if att.netns_path.exists() else ""
        try:
            await self.cni.delete(
                self.network(att.port), Target(att.container_id, netns, IFNAME), att.result
            )
        except CniError as exc:
            logger.warning("CNI DEL failed", container=att.container_id, error=str(exc))
        # The bridge plugin finds the address to un-masquerade in the netns; when the
        # interface or the namespace is gone (a reboot, a cut veth) its DEL leaves the
        # rules it tagged with our id, sometimes without an error.
        with contextlib.suppress(errors.SlipwayError):
            if swept := await sweep_iptables(att.container_id):
                logger.info("swept rules CNI DEL left", container=att.container_id, rules=swept)
        with contextlib.suppress(CniError):
            await self.cni.delete(self.loopback(), Target(att.container_id, netns, "lo"), None)
        if att.netns_path.exists():
            with contextlib.suppress(errors.SlipwayError):
                await _exec("ip", "netns", "del", att.netns)
        self._path(att.container_id).unlink(missing_ok=True)

    async def detach_all_except(self, keep: set[str]) -> list[str]:
        """DEL every attachment whose container is not in ``keep``, and every netns of
        ours that has no attachment (a crash between netns add and the record)."""
        gone = []
        for att in self.load_all():
            if att.container_id not in keep:
                logger.info("removing stale sandbox network", container=att.container_id)
                await self.detach(att)
                gone.append(att.container_id)
        known = {self.netns_name(c) for c in keep}
        if NETNS_DIR.is_dir():
            for entry in NETNS_DIR.iterdir():
                if entry.name.startswith(self.netns_prefix) and entry.name not in known:
                    with contextlib.suppress(errors.SlipwayError):
                        await _exec("ip", "netns", "del", entry.name)
        return gone

    async def destroy(self) -> None:
        """Remove everything of this network: every attachment (CNI DEL), the bridge,
        the nft table and the subnet claim (tests; an operator leaving isolation)."""
        await self.detach_all_except(set())
        with contextlib.suppress(errors.SlipwayError):
            await _exec("ip", "link", "del", self.bridge)
        with contextlib.suppress(errors.SlipwayError):
            await firewall.remove(self.table)
        with contextlib.suppress(OSError, ValueError):
            net = ipaddress.IPv4Network((self.dir / "subnet").read_text().strip())
            if _claim_live(net) and Path(_claim_path(net).read_text()) == self.dir.resolve():
                _claim_path(net).unlink()
        self._applied = None

    # ----- the firewall ------------------------------------------------------

    def firewall_spec(
        self,
        sandboxes: tuple[firewall.Sandboxed, ...] = (),
        grants: tuple[firewall.AddonGrant, ...] = (),
    ) -> firewall.FirewallSpec:
        return firewall.FirewallSpec(
            table=self.table,
            bridge=self.bridge,
            sandboxes=sandboxes,
            resolvers=tuple(self.resolvers),
            public_ports=self.options.public_ports,
            router_sources=self.options.router_sources,
            denied=self.options.denied,
            grants=grants,
        )

    async def apply_firewall(self, spec: firewall.FirewallSpec, *, force: bool = False) -> bool:
        """Apply when the plan changed (or ``force``: heal a table someone flushed)."""
        async with self._fw_lock:
            text = firewall.ruleset(spec)
            if text == self._applied and not force:
                return False
            await firewall.apply(spec)
            self._applied = text
            return True


def _portmap_ipv6_check(plugin: str, exc: CniError) -> bool:
    """Debian 12's portmap (1.1.x) CHECKs an ip6tables DNAT chain it never makes for
    an IPv4-only sandbox, so its CHECK always fails there; the IPv4 side is checked
    before that error."""
    return plugin == "portmap" and "could not check ipv6 dnat" in str(exc)


# ----- subnets ------------------------------------------------------------


def claim_subnet(state_dir: Path, wanted: str = "") -> ipaddress.IPv4Network:
    """The subnet of this state dir: given, kept from before, or a free /24 of POOL.

    Claims are files in CLAIMS_DIR naming their owner's state dir, so agents on one
    host (tests, simulated nodes) never pick the same one; a claim whose owner no
    longer names that subnet is free again.
    """
    kept = state_dir / "subnet"
    if wanted:
        net = ipaddress.ip_network(wanted, strict=True)
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 28:
            raise errors.InvalidArgument(f"dyno subnet {wanted} must be IPv4, /28 or larger")
    elif kept.is_file():
        net = ipaddress.IPv4Network(kept.read_text().strip())
    else:
        net = _pick_free(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    _claim_path(net).write_text(str(state_dir.resolve()))
    if not kept.is_file() or kept.read_text().strip() != str(net):
        kept.write_text(f"{net}\n")
    return net


def bridge_addresses(bridge: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses on ``bridge``; empty when it does not exist."""
    found = tools.run_sync("ip", "-o", "-4", "addr", "show", "dev", bridge, check=False)
    return [ipaddress.IPv4Interface(m) for m in re.findall(r"inet (\S+)", found)]


def _claim_path(net: ipaddress.IPv4Network) -> Path:
    return CLAIMS_DIR / str(net).replace("/", "_")


def _claim_live(net: ipaddress.IPv4Network) -> bool:
    try:
        owner = Path(_claim_path(net).read_text().strip())
        return (owner / "subnet").read_text().strip() == str(net)
    except OSError:
        return False


def _in_use() -> list[ipaddress.IPv4Network]:
    import subprocess

    used = []
    for argv in (["ip", "-o", "-4", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
        for m in re.finditer(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", out):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(m.group(1), strict=False))
    for server in resolvers():
        used.append(ipaddress.IPv4Network(f"{server}/32"))
    return [n for n in used if n.prefixlen > 0]


def _pick_free(state_dir: Path) -> ipaddress.IPv4Network:
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    with open(CLAIMS_DIR.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _in_use()
        candidates: list[ipaddress.IPv4Network] = list(POOL.subnets(new_prefix=24))
        start = int(_tag(state_dir), 16) % len(candidates)
        for i in range(len(candidates)):
            net = candidates[(start + i) % len(candidates)]
            if any(net.overlaps(u) for u in used) or _claim_live(net):
                continue
            # Claimed under the lock, so a concurrent agent skips it.
            (state_dir / "subnet").parent.mkdir(parents=True, exist_ok=True)
            (state_dir / "subnet").write_text(f"{net}\n")
            _claim_path(net).write_text(str(state_dir.resolve()))
            return net
    raise errors.ResourceExhausted(f"no free /24 left in {POOL} for sandboxes")


async def sweep_iptables(container_id: str) -> int:
    """Delete the iptables rules (and then-empty per-sandbox chains) a plugin tagged
    with ``container_id`` in its comment; returns how many rules went."""
    mark = f'id: "{container_id}"'
    removed = 0
    for table in ("nat", "filter"):
        chains = set()
        for line in (await tools.run("iptables-save", "-t", table)).splitlines():
            if not line.startswith("-A "):
                continue
            words = shlex.split(line)
            if not any(mark in w for w in words):
                continue
            chain = words[1]
            with contextlib.suppress(errors.SlipwayError):
                await tools.run("iptables", "-w", "-t", table, "-D", chain, *words[2:])
                removed += 1
            if "-j" in words:
                chains.add(words[words.index("-j") + 1])
        for chain in chains:
            if chain.startswith("CNI-") and not chain.startswith(("CNI-HOSTPORT", "CNI-FORWARD")):
                with contextlib.suppress(errors.SlipwayError):
                    await tools.run("iptables", "-w", "-t", table, "-F", chain)
                    await tools.run("iptables", "-w", "-t", table, "-X", chain)
    return removed


def destroy_sync(state_dir: Path) -> None:
    """``SandboxNetwork(state_dir).destroy()`` from synchronous code (test harnesses)."""
    if (state_dir / "subnet").exists() or (state_dir / "attachments").exists():
        asyncio.run(SandboxNetwork(state_dir).destroy())


async def _exec(*argv: str) -> None:
    await tools.run(*argv)
