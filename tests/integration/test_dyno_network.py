"""Issue 11 item 1: every dyno in a network of its own, sealed off from the platform.

Real everything: etcd, nats-server, the controller, an agent (runc, the CNI
plugins, nftables), a router process. Two apps run a web dyno each. From inside
app A's web dyno (``runc exec`` joins its namespaces) and from a one-off dyno of
A (``slipway run``) the test tries every platform port on every address of the
host, a canary listener of its own on all addresses, and app B's dyno (by its
address and by its host port); all must fail, the canary by a silent drop. An
HTTP server on a simulated outside host (a network namespace behind a veth
pair the test makes) answers through NAT; the router's public listener answers
too; the router still routes to both apps.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slipway import engines, pki, records
from slipway.cni import SandboxNetwork
from slipway.cni.sandboxnet import resolvers
from slipway.keys import Keys
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import types_pb2
from tests.harness import secure
from tests.harness.cluster import ROOT, LocalCluster
from tests.harness.oneoff import run_cli, start_cluster
from tests.harness.slugs import upload_slug
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Runs inside a dyno: TCP connects to every target and HTTP GETs, in parallel.
PROBE = r"""
import concurrent.futures, json, socket, urllib.request, urllib.error
TARGETS, URLS = json.loads(ARGS)
def tcp(t):
    s = socket.socket()
    s.settimeout(2.0)
    try:
        s.connect((t[0], t[1]))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error %s" % e.errno
    finally:
        s.close()
def get(u):
    req = urllib.request.Request(u[0], headers={"Host": u[1]} if u[1] else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, ""]
    except Exception as e:
        return [0, str(e)]
with concurrent.futures.ThreadPoolExecutor(64) as ex:
    out = {"tcp": list(ex.map(tcp, TARGETS)), "http": list(ex.map(get, URLS))}
print("PROBE " + json.dumps(out))
"""


def probe_command(targets: list[tuple[str, int]], urls: list[tuple[str, str]]) -> str:
    code = f"ARGS = {json.dumps(json.dumps([targets, urls]))}\n{PROBE}"
    packed = base64.b64encode(code.encode()).decode()
    return f"python3 -c 'import base64; exec(base64.b64decode(\"{packed}\"))'"


def parse_probe(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("PROBE "):
            return dict(json.loads(line[6:]))
    raise AssertionError(f"no probe result in: {output!r}")


@dataclass
class Outside:
    """A simulated host outside the platform: its own netns, a veth pair, an HTTP server."""

    address: str
    port: int
    host_side: str  # the address the outside host sees when NAT is at work
    # The same host on a link-local address, like a cloud's metadata service.
    metadata: str


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    tag = os.urandom(3).hex()
    ns, outer, inner = f"swout{tag}", f"swo{tag}a", f"swo{tag}b"
    octet = int(tag[:2], 16)
    host_ip, far_ip = f"198.18.{octet}.1", f"198.18.{octet}.2"
    link_host, link_far = f"169.254.{octet}.1", f"169.254.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    ip("netns", "add", ns)
    server = None
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("addr", "add", f"{link_host}/30", "dev", outer)
        ip("-n", ns, "addr", "add", f"{far_ip}/30", "dev", inner)
        ip("-n", ns, "addr", "add", f"{link_far}/30", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        script = (
            "import http.server, json\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        body = json.dumps({'outside': True, 'client': self.client_address[0]})\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(body.encode())\n"
            "http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()\n"
        )
        server = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns}", "--", sys.executable, "-c", script],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        engines.wait_for_port(far_ip, 8000, 15, server)  # type: ignore[arg-type]
        engines.wait_for_port(link_far, 8000, 15, server)  # type: ignore[arg-type]
        yield Outside(far_ip, 8000, host_ip, link_far)
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Canary:
    """A listener of the test's own on every host address: what etcd or SSH bound to
    0.0.0.0 would be. Without the firewall a dyno would reach it on the gateway."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()


@dataclass
class Platform:
    cluster: LocalCluster
    router_port: int
    metrics_port: int
    health_port: int
    canary: Canary

    @property
    def agent(self):  # type: ignore[no-untyped-def]
        return self.cluster.agents["node-a"]

    def network(self) -> SandboxNetwork:
        net = SandboxNetwork(self.agent.data_dir / "net")
        net._known_subnet()
        return net

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in (self.agent.data_dir / "dynos").glob("*/record.json"):
            out.append(json.loads(path.read_text()))
        return out

    def web_record(self, app: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for r in self.records():
                if r["spec"]["app"] == app and r["spec"]["process_type"] == "web":
                    if r["state"] == "up" and r.get("address"):
                        return r
            return None

        found = eventually(find, timeout=60)
        assert found is not None
        return found


def host_addresses() -> list[str]:
    """The host's IPv4 addresses, except other test agents' dyno bridges."""
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r"\d+:\s+(\S+)\s+inet\s+([\d.]+)/", line)
        if m and not m.group(1).startswith(("swbr", "swo")):
            found.append(m.group(2))
    return found


def deploy(cluster: LocalCluster, app: str) -> None:
    cluster.controller.cli("apps:create", app, check=True)
    slug = asyncio.run(upload_slug(cluster.controller.nats_url))
    with cluster.client() as client:
        client.update_config(app, {"GREETING": f"hello from {app}"})
        client.create_release(
            app,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
            {"web": slug.process_types["web"], "worker": slug.process_types["worker"]},
        )
        client.scale(app, [pb.FormationChange(type="web", quantity=1)])


@pytest.fixture(scope="module")
def platform(
    etcd_endpoint: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    prefix = f"/slipway-test-{uuid.uuid4().hex[:10]}"
    workdir = tmp_path_factory.mktemp("net")
    cluster = start_cluster(workdir, etcd_endpoint, prefix, nats_url)
    router_port = engines.free_port("0.0.0.0")
    metrics_port = engines.free_port("0.0.0.0")
    health_port = engines.free_port()
    log = open(workdir / "router.log", "wb")
    router = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router",
            "--listen",
            f"0.0.0.0:{router_port}",
            "--metrics-listen",
            f"0.0.0.0:{metrics_port}",
            "--etcd",
            etcd_endpoint,
            "--etcd-prefix",
            prefix,
            "--base-domain",
            "localhost",
            *secure.flags(pki.Role.ROUTER),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    log.close()
    try:
        engines.wait_for_port("127.0.0.1", router_port, 20, router)  # type: ignore[arg-type]
        cluster.add_agent(
            "node-a",
            extra_args=("--router-ports", str(router_port), "--health-port", str(health_port)),
        )
        deploy(cluster, "neta")
        deploy(cluster, "netb")
        yield Platform(cluster, router_port, metrics_port, health_port, Canary())
    finally:
        router.terminate()
        try:
            router.wait(15)
        except subprocess.TimeoutExpired:
            router.kill()
        cluster.close()


def attach_port(p: Platform) -> int:
    async def read() -> int:
        async with secure.root_etcd([p.cluster.controller.etcd_endpoint]) as etcd:
            kv = await etcd.get(Keys(p.cluster.controller.prefix).node("node-a"))
            assert kv is not None
            return int(json.loads(kv.value)["attach_port"])

    return asyncio.run(read())


def platform_targets(p: Platform, other: dict[str, Any], outside: Outside) -> list[tuple[str, int]]:
    ctl = p.cluster.controller
    ports = {
        "etcd": int(ctl.etcd_endpoint.rpartition(":")[2]),
        "nats": int(ctl.nats_url.rpartition(":")[2]),
        "controller": int(ctl.address.rpartition(":")[2]),
        "attach": attach_port(p),
        "health": p.health_port,
        "metrics": p.metrics_port,
        "canary": p.canary.port,
        "ssh": 22,
        "other dyno's host port": int(other["port"]),
    }
    hosts = ["127.0.0.1", p.network().gateway, *host_addresses()]
    targets = [(h, port) for h in hosts for port in ports.values()]
    targets.append((other["address"], int(other["port"])))  # the other app's dyno itself
    # Link-local (cloud metadata): the simulated outside host on 169.254.x.2.
    targets.append((outside.metadata, outside.port))
    return targets


def urls(p: Platform, outside: Outside) -> list[tuple[str, str]]:
    return [
        (f"http://{outside.address}:{outside.port}/", ""),
        # The router's public listener, as anyone on the internet may call it.
        (f"http://{p.network().gateway}:{p.router_port}/", "netb.localhost"),
    ]


def check_sealed(p: Platform, outside: Outside, result: dict[str, Any], other: dict[str, Any]):  # type: ignore[no-untyped-def]
    targets = platform_targets(p, other, outside)
    opened = [t for t, r in zip(targets, result["tcp"], strict=True) if r == "open"]
    assert opened == [], f"reachable from inside the dyno: {opened}"
    verdict = dict(zip(targets, result["tcp"], strict=True))
    # Dropped by the firewall, not merely closed: the canary listens on all addresses.
    assert verdict[(p.network().gateway, p.canary.port)] == "timeout"
    assert verdict[(other["address"], int(other["port"]))] == "timeout"
    assert verdict[(outside.metadata, outside.port)] == "timeout"
    (out_status, out_body), (router_status, router_body) = result["http"]
    assert out_status == 200, out_body
    # Egress is masqueraded: the outside host sees the host's address, not the dyno's.
    assert json.loads(out_body) == {"outside": True, "client": outside.host_side}
    assert router_status == 200, router_body
    assert json.loads(router_body)["greeting"] == "hello from netb"


def test_the_host_itself_reaches_what_dynos_cannot(platform: Platform, outside: Outside) -> None:
    """The probe's negative results mean something: from the host the canary, the
    link-local "metadata" server and the other app's dyno (its host port) answer."""
    other = platform.web_record("netb")
    gateway = platform.network().gateway
    with socket.create_connection((gateway, platform.canary.port), timeout=5):
        pass
    with socket.create_connection((outside.metadata, outside.port), timeout=5):
        pass
    with urllib.request.urlopen(f"http://127.0.0.1:{other['port']}/", timeout=10) as r:
        assert json.loads(r.read())["greeting"] == "hello from netb"


def test_web_dyno_is_sealed_off_but_has_egress(platform: Platform, outside: Outside) -> None:
    mine = platform.web_record("neta")
    other = platform.web_record("netb")
    argv = [
        "runc",
        "--root",
        str(platform.agent.runc_root),
        "exec",
        "--user",
        "64000:64000",
        mine["container_id"],
        "bash",
        "-c",
        probe_command(platform_targets(platform, other, outside), urls(platform, outside)),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    check_sealed(platform, outside, parse_probe(out.stdout), other)


def test_one_off_dyno_is_sealed_off_but_has_egress(platform: Platform, outside: Outside) -> None:
    other = platform.web_record("netb")
    command = probe_command(platform_targets(platform, other, outside), urls(platform, outside))
    out = run_cli(platform.cluster, "run", "-a", "neta", "--", command, timeout=120)
    assert out.returncode == 0, out.stderr
    check_sealed(platform, outside, parse_probe(out.stdout.decode()), other)


def test_router_routes_to_dynos_in_their_own_networks(platform: Platform) -> None:
    for app in ("neta", "netb"):
        record = platform.web_record(app)
        assert record["address"].startswith(str(platform.network().subnet).rsplit(".", 1)[0])

        def routed(app: str = app) -> dict[str, Any] | None:
            req = urllib.request.Request(
                f"http://127.0.0.1:{platform.router_port}/", headers={"Host": f"{app}.localhost"}
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return dict(json.loads(r.read()))
            except OSError:
                return None

        body = eventually(routed, timeout=30)
        assert body is not None and body["greeting"] == f"hello from {app}"


def test_dyno_resolv_conf_names_a_reachable_resolver(platform: Platform) -> None:
    """DNS inside the dyno: the resolvers of its /etc/resolv.conf are the host's
    non-loopback ones (reached through NAT), never a loopback address."""
    mine = platform.web_record("neta")
    runc = ["runc", "--root", str(platform.agent.runc_root)]
    out = subprocess.run(
        [*runc, "exec", mine["container_id"], "cat", "/etc/resolv.conf"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    servers = re.findall(r"^nameserver\s+(\S+)", out.stdout, flags=re.M)
    assert servers and not any(s.startswith("127.") for s in servers)
    assert servers == resolvers()
    ruleset = subprocess.run(
        ["nft", "list", "set", "inet", platform.network().table, "resolvers"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert all(s in ruleset for s in servers)


def probe_in(p: Platform, record: dict[str, Any], targets: list[tuple[str, int]]) -> list[str]:
    argv = ["runc", "--root", str(p.agent.runc_root), "exec", "--user", "64000:64000"]
    argv += [record["container_id"], "bash", "-c", probe_command(targets, [])]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return list(parse_probe(out.stdout)["tcp"])


def test_addon_grant_opens_one_address_and_port_to_one_app(platform: Platform) -> None:
    """What the add-on leader writes in ``addongrants/{app}`` opens exactly that
    address and port, to that app's dynos only, and closes again when it is gone."""
    database = Canary()  # stands in for an add-on server on the host's own address
    address = next(a for a in host_addresses() if not a.startswith("127."))
    granted = (address, database.port)
    others = [(platform.network().gateway, database.port), (address, platform.canary.port)]
    mine, theirs = platform.web_record("neta"), platform.web_record("netb")
    key = Keys(platform.cluster.controller.prefix).addon_grant("neta")

    async def put(value: bytes | None) -> None:
        async with secure.root_etcd([platform.cluster.controller.etcd_endpoint]) as etcd:
            if value is None:
                await etcd.delete(key)
            else:
                await etcd.put(key, value)

    def why() -> str:
        """What the agent did with the grant and what the firewall holds, for a failure."""
        table = platform.network().table
        addons = subprocess.run(
            ["nft", "list", "set", "inet", table, "addons"], capture_output=True, text=True
        )
        lines = platform.agent.log_path.read_text(errors="replace").splitlines()
        said = [line for line in lines if "grant" in line or "firewall" in line]
        return f"dyno {mine['address']}\n{addons.stdout}{addons.stderr}\n" + "\n".join(said[-20:])

    assert probe_in(platform, mine, [granted]) == ["timeout"]
    asyncio.run(put(records.addon_grants_value([granted])))
    try:
        try:
            eventually(lambda: probe_in(platform, mine, [granted]) == ["open"], timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{why()}") from None
        assert probe_in(platform, mine, others) == ["timeout", "timeout"]
        assert probe_in(platform, theirs, [granted]) == ["timeout"]
    finally:
        asyncio.run(put(None))
    eventually(lambda: probe_in(platform, mine, [granted]) == ["timeout"], timeout=60)


def test_scaled_down_dyno_leaves_no_netns_lease_or_rule(platform: Platform) -> None:
    """Scaling an app to zero takes its dyno's address, netns, rules and lease away."""
    net = platform.network()
    gone = platform.web_record("netb")
    with platform.cluster.client() as client:
        client.scale("netb", [pb.FormationChange(type="web", quantity=0)])

    def removed() -> bool:
        return not any(r["spec"]["app"] == "netb" for r in platform.records())

    eventually(removed, timeout=60)
    assert not (Path("/run/netns") / gone["netns"]).exists()
    assert not (net.ipam_dir / "slipway" / gone["address"]).exists()
    web = subprocess.run(
        ["nft", "list", "set", "inet", net.table, "web"], capture_output=True, text=True
    ).stdout
    assert gone["address"] not in web
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert gone["container_id"] not in rules
