"""The whole platform as a user drives it: `slipway up`, then the CLI and HTTP.

Everything is real: `slipway up` starts etcd, nats-server, a controller, an
agent (runc dynos), a builder and a router on free ports with a fresh data
directory; the test only uses the CLI, HTTP through the router, and (to check
that nothing is left behind) runc, etcd and the object store directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slipway import engines, objstore, pki
from slipway.etcd import Etcd
from slipway.keys import Keys
from tests.harness.wait import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Platform:
    data_dir: Path
    api_port: int
    router_port: int
    etcd_port: int
    etcd_peer_port: int
    nats_port: int
    config_path: Path
    addons_port: int
    postgres_port: int
    callback_port: int
    # PostgreSQL runs as its own user: not under pytest's private temp dirs.
    addons_dir: Path
    router_tls_port: int = 0
    platform_api_port: int = 0
    proc: subprocess.Popen[str] | None = None
    output: str = ""

    @classmethod
    def on_free_ports(cls, tmp: Path) -> Platform:
        ports = {engines.free_port() for _ in range(12)}
        api, router, etcd, peer, nats, addons, pg, callback, https, v3 = sorted(ports)[:10]
        addons_dir = Path(tempfile.mkdtemp(prefix="slipway-e2e-addons-", dir="/tmp"))
        addons_dir.chmod(0o711)
        return cls(
            tmp / "data",
            api,
            router,
            etcd,
            peer,
            nats,
            tmp / "cli.json",
            addons,
            pg,
            callback,
            addons_dir,
            https,
            v3,
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
        env["SLIPWAY_CONFIG"] = str(self.config_path)
        return env

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(BIN / "slipway"),
                "up",
                "--data-dir",
                str(self.data_dir),
                "--api-port",
                str(self.api_port),
                "--router",
                f"127.0.0.1:{self.router_port}",
                "--router-https",
                f"127.0.0.1:{self.router_tls_port}",
                "--platform-api-port",
                str(self.platform_api_port),
                "--etcd-port",
                str(self.etcd_port),
                "--etcd-peer-port",
                str(self.etcd_peer_port),
                "--nats-port",
                str(self.nats_port),
                "--addons-port",
                str(self.addons_port),
                "--postgres-port",
                str(self.postgres_port),
                "--addons-callback-port",
                str(self.callback_port),
                "--addons-dir",
                str(self.addons_dir),
                "--no-install",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output += line
            if line.startswith("Stop with Ctrl-C"):
                return
        raise AssertionError(f"slipway up did not come up:\n{self.output}")

    def stop(self, *, keep_addons: bool = False) -> None:
        try:
            if self.proc is None or self.proc.poll() is not None:
                return
            self.proc.send_signal(signal.SIGINT)
            out, _ = self.proc.communicate(timeout=120)
            self.output += out
            assert self.proc.returncode == 0, self.output
        finally:
            if not keep_addons:
                shutil.rmtree(self.addons_dir, ignore_errors=True)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "slipway"), *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"slipway {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result

    def http(self, app: str, path: str = "/json") -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.router_port}{path}", headers={"Host": f"{app}.localhost"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def https(self, app: str, path: str = "/") -> tuple[int, str]:
        """A request as a browser makes it: TLS to APP.localhost, checked
        against the cluster CA `slipway up` made."""
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "pki" / "ca" / "ca.crt"))
        with socket.create_connection(("127.0.0.1", self.router_tls_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=f"{app}.localhost") as tls:
                tls.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: {app}.localhost\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body.decode(errors="replace")

    def containers(self) -> list[str]:
        out = subprocess.run(
            ["runc", "--root", str(self.data_dir / "agent" / "runc"), "list", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.split()

    @property
    def root(self) -> pki.Bundle:
        """`slipway up` made its own CA: an operator on this host uses its root bundle."""
        return pki.Bundle(self.data_dir / "pki" / "root")

    def etcd_keys(self, prefix: bytes) -> list[bytes]:
        async def read() -> list[bytes]:
            async with Etcd([f"127.0.0.1:{self.etcd_port}"], credentials=self.root) as etcd:
                kvs, _ = await etcd.get_prefix(prefix)
                return [kv.key for kv in kvs]

        return asyncio.run(read())

    def objects(self) -> dict[str, list[str]]:
        async def read() -> dict[str, list[str]]:
            nc = await objstore.connect(
                [f"nats://127.0.0.1:{self.nats_port}"], name="e2e", credentials=self.root
            )
            try:
                stores = objstore.ObjectStores(nc.jetstream())
                return {b: await stores.names(b) for b in objstore.BUCKETS}
            finally:
                await nc.close()

        return asyncio.run(read())


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform.on_free_ports(tmp_path)
    p.start()
    try:
        yield p
    finally:
        try:
            p.stop()
        finally:
            for cid in p.containers():
                subprocess.run(
                    ["runc", "--root", str(p.data_dir / "agent" / "runc"), "delete", "-f", cid],
                    check=False,
                    capture_output=True,
                )


def greeting(platform: Platform, app: str) -> str:
    status, body = platform.http(app)
    assert status == 200, body
    return str(json.loads(body)["greeting"])


def test_a_new_user_session(platform: Platform) -> None:
    assert "Slipway is up." in platform.output
    assert json.loads(platform.config_path.read_text())["token"].startswith("slw_")

    created = platform.cli("apps:create", "demo").stdout
    assert f"http://demo.localhost:{platform.router_port}/" in created  # the real port
    deploy = platform.cli("deploy", "-a", "demo", "examples/python")
    assert "-----> Python app detected" in deploy.stdout + deploy.stderr
    assert "Released v2" in deploy.stdout + deploy.stderr

    assert eventually(lambda: greeting(platform, "demo") == "Hello from Slipway", 60)
    status, page = platform.http("demo", "/")
    assert status == 200 and "<h1>Hello from Slipway</h1>" in page
    # HTTPS out of the box: the app's certificate from the cluster CA.
    status, page = platform.https("demo", "/")
    assert status == 200 and "<h1>Hello from Slipway</h1>" in page
    # Heroku's Platform API beside the CLI's, with the same login.
    v3 = f"https://localhost:{platform.platform_api_port}"
    assert f"Platform API: {v3}" in platform.output
    token = json.loads(platform.config_path.read_text())["token"]
    ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca" / "ca.crt"))

    def v3_get(path: str) -> Any:
        request = urllib.request.Request(
            f"{v3}{path}",
            headers={"Authorization": f"Bearer {token}",
                     "Accept": "application/vnd.heroku+json; version=3"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10, context=ctx) as resp:
            return json.loads(resp.read())

    assert [a["name"] for a in v3_get("/apps")] == ["demo"]
    [web] = v3_get("/apps/demo/dynos")
    assert (web["name"], web["state"], web["release"]["version"]) == ("web.1", "up", 2)
    formation = [(f["type"], f["quantity"]) for f in v3_get("/apps/demo/formation")]
    assert formation == [("web", 1), ("worker", 0)]  # the Procfile's types

    def logs_show_router_and_app_lines() -> bool:
        out = platform.cli("logs", "-a", "demo", "-n", "200").stdout
        return (
            'heroku[router]: at=info method=GET path="/json"' in out
            and "app[web.1]: GET /json" in out
        )

    eventually(logs_show_router_and_app_lines, 30)

    run = platform.cli(
        "run",
        "-a",
        "demo",
        "--no-tty",
        "python",
        "-c",
        "import os, sys; print('one-off', os.environ['DYNO']); sys.exit(7)",
        check=False,
    )
    assert run.returncode == 7, run.stderr
    assert "one-off run.1" in run.stdout

    platform.cli("config:set", "-a", "demo", "GREETING=Configured")
    eventually(lambda: greeting(platform, "demo") == "Configured", 60)

    platform.cli("ps:scale", "-a", "demo", "web=3")
    eventually(
        lambda: (
            len(
                [
                    d
                    for d in json.loads(platform.cli("ps", "-a", "demo", "--json").stdout)
                    if d["type"] == "web" and d["state"] == "up"
                ]
            )
            == 3
        ),
        90,
    )
    assert "web.3" in platform.cli("ps", "-a", "demo").stdout

    platform.cli("releases:rollback", "-a", "demo", "v2")
    eventually(lambda: greeting(platform, "demo") == "Hello from Slipway", 90)
    assert "Rollback to v2" in platform.cli("releases", "-a", "demo").stdout

    # Ctrl-C stops everything, dynos included; the next `slipway up` brings them back.
    platform.stop(keep_addons=True)
    assert not platform.containers()
    platform.start()
    eventually(lambda: greeting(platform, "demo") == "Hello from Slipway", 90)

    keys = Keys("/slipway")
    platform.cli("apps:create", "keeper")
    platform.cli("apps:destroy", "-a", "demo", "--confirm", "demo")
    eventually(lambda: not platform.containers(), 60)
    eventually(lambda: not platform.etcd_keys(keys.route_dynos("demo")), 30)
    assert not platform.etcd_keys(keys.dynos("demo"))
    assert not platform.etcd_keys(keys.releases("demo"))
    eventually(lambda: not any(platform.objects().values()), 90)
    assert platform.http("demo")[0] == 404

    platform.stop(keep_addons=True)
    platform.start()
    apps = {a["name"] for a in json.loads(platform.cli("apps", "--json").stdout)}
    assert apps == {"keeper"}
