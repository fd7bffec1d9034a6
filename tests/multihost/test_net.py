"""The simulated hosts themselves: reachable across the bridge, cut off when
unplugged, and removed entirely (also what a crashed run left behind)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import engines
from tests.harness.wait import eventually
from tests.multihost import net

pytestmark = pytest.mark.multihost


@pytest.fixture
def network() -> Iterator[net.Network]:
    reason = net.unavailable_reason()
    if reason is not None:
        pytest.skip(f"multi-host tests need network namespaces: {reason}")
    network = net.Network()
    try:
        network.create(["a", "b"])
        yield network
    finally:
        network.close()


def leftovers(tag: str) -> list[str]:
    mark = f"{net.PREFIX}{tag}"
    names = [p.name for p in net.NETNS_DIR.iterdir()] if net.NETNS_DIR.exists() else []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names += [line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()]
    return [n for n in names if n.startswith(mark)]


def can_connect(src: net.Host, address: str, port: int) -> bool:
    probe = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(1)\n"
        f"sys.exit(s.connect_ex(({address!r}, {port})))"
    )
    result = subprocess.run(src.argv([sys.executable, "-c", probe]), timeout=10, check=False)
    return result.returncode == 0


def serve(host: net.Host, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        host.argv([sys.executable, "-m", "http.server", "--bind", host.address, str(port)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engines.wait_for_port(host.address, port, 10, proc)
    return proc


def test_hosts_reach_each_other_until_unplugged(network: net.Network) -> None:
    a, b = network.hosts["a"], network.hosts["b"]
    server = serve(a, 8000)
    try:
        assert can_connect(b, a.address, 8000)
        a.unplug()
        assert not can_connect(b, a.address, 8000)
        a.plug()
        eventually(lambda: can_connect(b, a.address, 8000), 10, 0.2)
    finally:
        server.kill()
        server.wait()
    network.close()
    assert leftovers(network.tag) == []


def test_a_crashed_runs_hosts_and_processes_are_removed(network: net.Network) -> None:
    sleeper = subprocess.Popen(network.hosts["a"].argv(["sleep", "300"]))
    dead = subprocess.Popen(["true"])
    dead.wait()
    # As if the run's owner had died without cleaning up.
    state: Path = net.STATE_DIR / f"{network.tag}.json"
    state.write_text(json.dumps({"pid": dead.pid}))

    assert network.tag in net.clean_stale()
    assert sleeper.wait(10) == -9
    assert leftovers(network.tag) == []
    assert not state.exists()


def test_a_live_runs_hosts_are_kept(network: net.Network) -> None:
    assert network.tag not in net.clean_stale()
    assert len(leftovers(network.tag)) == 1 + 2 * 2  # bridge, a cable and a namespace per host
