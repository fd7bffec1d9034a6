"""Pebble, Let's Encrypt's ACME test server, and pebble-challtestsrv as its DNS,
started on free ports (built by scripts/build_pebble.sh).

Every name resolves to 127.0.0.1 unless a test points it elsewhere
(:meth:`Pebble.point`), and Pebble checks HTTP-01 challenges on
``http_port``: the port of the router under test. Its HTTPS directory has a
certificate from the session's cluster CA; the certificates it issues chain
to a root it makes at start (:meth:`Pebble.root_pem`).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from slipway import engines, pki
from tests.harness import secure

VERSION = os.environ.get("SLIPWAY_PEBBLE_VERSION", "v2.10.3")
BIN = Path(os.environ.get("SLIPWAY_PEBBLE_CACHE", "/var/cache/slipway/pebble")) / VERSION


@dataclass
class Pebble:
    workdir: Path
    http_port: int
    acme_port: int = 0
    management_port: int = 0
    dns_port: int = 0
    dns_management_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def ca_file(self) -> Path:
        """What the directory's HTTPS certificate is checked against."""
        return secure.ca_file()

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self) -> Pebble:
        for name in ("pebble", "pebble-challtestsrv"):
            if not (BIN / name).exists():
                pytest.fail(f"{BIN / name} is missing: run `bash scripts/build_pebble.sh`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.acme_port, self.management_port = engines.free_port(), engines.free_port()
        self.dns_port, self.dns_management_port = engines.free_port(), engines.free_port()
        server = secure.bundle(pki.Role.ENGINE, hosts=("127.0.0.1",))
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(server.cert_file),
                "privateKey": str(server.key_file),
                "httpPort": self.http_port,
                "tlsPort": engines.free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.workdir / "pebble.json").write_text(json.dumps(config))
        log = open(self.workdir / "pebble.log", "ab")
        try:
            dns = subprocess.Popen(
                [
                    str(BIN / "pebble-challtestsrv"),
                    "-dnsserver", f"127.0.0.1:{self.dns_port}",
                    "-management", f"127.0.0.1:{self.dns_management_port}",
                    "-defaultIPv4", "127.0.0.1",
                    "-defaultIPv6", "",
                    "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            self.procs.append(dns)
            engines.wait_for_port("127.0.0.1", self.dns_management_port, 20, dns)
            env = dict(os.environ)
            # Validate at once; refuse no good nonce (the client's retry is
            # tested against the first refusal Pebble would make anyway).
            env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
            acme = subprocess.Popen(
                [
                    str(BIN / "pebble"),
                    "-config", str(self.workdir / "pebble.json"),
                    "-dnsserver", f"127.0.0.1:{self.dns_port}",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            self.procs.append(acme)
            engines.wait_for_port("127.0.0.1", self.acme_port, 20, acme)
        finally:
            log.close()
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            engines.terminate(proc, 5)

    def root_pem(self) -> bytes:
        """The root the certificates Pebble issues chain to."""
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=self.context(), timeout=10) as reply:
            return bytes(reply.read())

    def _dns(self, path: str, body: dict[str, object]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dns_management_port}/{path}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def point(self, host: str, address: str) -> None:
        """Resolve ``host`` to ``address`` (where no router answers, say)."""
        self._dns("add-a", {"host": host + ".", "addresses": [address]})

    def unpoint(self, host: str) -> None:
        """Back to the default (127.0.0.1)."""
        self._dns("clear-a", {"host": host + "."})
