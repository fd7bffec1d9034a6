"""Simulated hosts: one Linux bridge and one network namespace per host.

Each host is a namespace with loopback up and one veth pair whose outer end is
a port of the bridge; the bridge itself carries ``.1`` of a private /24 in
10.213.0.0/16, so the test (in the root namespace) reaches every host through
it, and hosts reach each other across it. Nothing leaves that subnet.

Processes enter a host with ``nsenter --net=/run/netns/NAME``, not
``ip netns exec``: the latter also remounts /sys in a fresh mount namespace,
which hides /sys/fs/cgroup, and runc (dynos, build sandboxes) then cannot
create cgroups.

Names carry the prefix ``swmh`` and a per-run tag; a state file in
``/run/slipway-multihost`` records which process owns a tag, so a later run
removes what a crashed run left behind without touching a live run's hosts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from slipway.cni import SandboxNetwork

PREFIX = "swmh"
STATE_DIR = Path("/run/slipway-multihost")
NETNS_DIR = Path("/run/netns")


def unavailable_reason() -> str | None:
    """Why this machine cannot run the multi-host tests, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = _run("ip", "netns", "add", probe, check=False)
    _run("ip", "netns", "del", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def netns_pids(netns: str) -> list[int]:
    out = _run("ip", "netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_netns_processes(netns: str) -> None:
    """SIGKILL everything in the namespace: daemons, shims, dynos, build sandboxes."""
    for _ in range(50):
        pids = netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def delete_runc_containers(root: Path) -> None:
    """runc state and cgroups of containers whose processes are already dead."""
    if not root.is_dir():
        return
    for cid in _run("runc", "--root", str(root), "list", "-q", check=False).stdout.split():
        _run("runc", "--root", str(root), "delete", "-f", cid, check=False)


def _remove_tag(tag: str) -> None:
    """Delete every process, container, namespace and link of one run (each step
    tolerates absence)."""
    mark = f"{PREFIX}{tag}"
    state = STATE_DIR / f"{tag}.json"
    try:
        workdir = str(json.loads(state.read_text()).get("workdir") or "")
    except (OSError, ValueError):
        workdir = ""
    if NETNS_DIR.exists():
        for entry in NETNS_DIR.iterdir():
            if entry.name.startswith(mark):
                kill_netns_processes(entry.name)
    if workdir and shutil.which("runc"):
        # Agents keep runc state in DIR/runc, builders in DIR/sandbox/runc.
        for root in Path(workdir).glob("*/**/runc"):
            delete_runc_containers(root)
    if NETNS_DIR.exists():
        # The dynos' own namespaces (slipway.cni); bridges and rules die with the hosts'.
        nets = Path(workdir).glob("*/**/net") if workdir else iter(())
        prefixes = tuple(SandboxNetwork(d).netns_prefix for d in nets)
        for entry in NETNS_DIR.iterdir():
            if entry.name.startswith(mark) or (workdir and entry.name.startswith(prefixes)):
                _run("ip", "netns", "del", entry.name, check=False)
    links = _run("ip", "-o", "link", "show", check=False).stdout
    for name in re.findall(r"^\d+: ([^:@]+)", links, flags=re.M):
        if name.startswith(mark):
            _run("ip", "link", "del", name, check=False)
    state.unlink(missing_ok=True)


def clean_stale() -> list[str]:
    """Remove what runs whose owner process died left behind; return their tags."""
    live: set[str] = set()
    stale: set[str] = set()
    if STATE_DIR.exists():
        for path in STATE_DIR.glob("*.json"):
            try:
                owner = int(json.loads(path.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                owner = 0
            (live if owner and _alive(owner) else stale).add(path.stem)
    # Objects of a run that died before writing its state file have no owner at all.
    names = [e.name for e in NETNS_DIR.iterdir()] if NETNS_DIR.exists() else []
    names += re.findall(r"^\d+: ([^:@]+)", _run("ip", "-o", "link", "show").stdout, flags=re.M)
    for name in names:
        if name.startswith(PREFIX) and len(name) >= len(PREFIX) + 4:
            tag = name[len(PREFIX) : len(PREFIX) + 4]
            if tag not in live:
                stale.add(tag)
    for tag in sorted(stale):
        _remove_tag(tag)
    return sorted(stale)


def _free_octet() -> int:
    used = set(re.findall(r"inet 10\.213\.(\d+)\.", _run("ip", "-o", "-4", "addr").stdout))
    for octet in range(256):
        if str(octet) not in used:
            return octet
    raise RuntimeError("no free /24 left in 10.213.0.0/16")


@dataclass
class Host:
    """One simulated host: a namespace, its address and the bridge end of its cable."""

    name: str
    netns: str
    address: str
    cable: str

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's network namespace (and nowhere else)."""
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", "--", *argv]

    def unplug(self) -> None:
        """Take the host's network away: its bridge port goes down, packets are dropped."""
        _run("ip", "link", "set", self.cable, "down")

    def plug(self) -> None:
        _run("ip", "link", "set", self.cable, "up")


@dataclass
class Network:
    """A bridge with hosts; ``close`` removes all of it (safe to call twice).

    ``close`` kills every process in the hosts' namespaces (daemons, shims,
    dynos, build sandboxes: they all live there) and deletes the runc
    containers found under ``workdir``, also for a crashed run's leftovers.
    """

    workdir: Path | None = None
    tag: str = field(default_factory=lambda: os.urandom(2).hex())
    hosts: dict[str, Host] = field(default_factory=dict)
    subnet: str = ""

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.tag}br"

    @property
    def gateway(self) -> str:
        """The bridge's own address: where the test itself sits."""
        return f"{self.subnet}.1"

    def create(self, names: list[str]) -> dict[str, Host]:
        clean_stale()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        # Owner first, so a crash at any later step leaves a tag clean_stale can remove.
        owner = {"pid": os.getpid(), "workdir": str(self.workdir or "")}
        (STATE_DIR / f"{self.tag}.json").write_text(json.dumps(owner))
        self.subnet = f"10.213.{_free_octet()}"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for index, name in enumerate(names):
            self.hosts[name] = self._add_host(index, name)
        return self.hosts

    def _add_host(self, index: int, name: str) -> Host:
        netns = f"{PREFIX}{self.tag}-{name}"
        cable = f"{PREFIX}{self.tag}h{index:02d}"
        inner = f"{PREFIX}{self.tag}n{index:02d}"
        address = f"{self.subnet}.{11 + index}"
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", cable, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", netns)
        _run("ip", "link", "set", cable, "master", self.bridge)
        _run("ip", "link", "set", cable, "up")
        inside = ["ip", "-n", netns]
        _run(*inside, "link", "set", "lo", "up")
        _run(*inside, "link", "set", inner, "name", "eth0")
        _run(*inside, "addr", "add", f"{address}/24", "dev", "eth0")
        _run(*inside, "link", "set", "eth0", "up")
        return Host(name, netns, address, cable)

    def close(self) -> None:
        _remove_tag(self.tag)
