"""Build steps get a network of their own: egress through NAT, nothing of the host.

A real ``RuncSandbox`` with a real ``SandboxNetwork`` (CNI plugins, nftables)
runs a step that probes the builder host (a canary listening on every address,
the NATS port) and an HTTP server on a simulated outside host (its own network
namespace, see test_dyno_network.py). The steps' networks are gone afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.sandbox import RuncSandbox
from slipway.cni import SandboxNetwork
from slipway.cni.sandboxnet import NETNS_DIR
from tests.harness.stacks import build_stack
from tests.integration.test_dyno_network import (
    PROBE,
    Canary,
    Outside,
    host_addresses,
    parse_probe,
)
from tests.integration.test_dyno_network import outside as outside

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_build_step_reaches_the_outside_but_not_the_host(
    tmp_path: Path,
    outside: Outside,
    nats_url: str,
) -> None:
    canary = Canary()
    network = SandboxNetwork(tmp_path / "net")
    sandbox = RuncSandbox(tmp_path / "sandbox", build_stack(tmp_path), network=network)
    await sandbox.prepare()
    try:
        assert network.subnet is not None
        nats_port = int(nats_url.rpartition(":")[2])
        hosts = [network.gateway, *host_addresses()]
        targets = [(h, p) for h in hosts for p in (canary.port, nats_port, 22)]
        targets.append((outside.metadata, outside.port))
        urls = [(f"http://{outside.address}:{outside.port}/", "")]
        code = f"ARGS = {json.dumps(json.dumps([targets, urls]))}\n{PROBE}"
        app, tmp = tmp_path / "app", tmp_path / "tmp"
        app.mkdir()
        tmp.mkdir()
        lines: list[str] = []

        async def on_line(line: str) -> None:
            lines.append(line)

        result = await sandbox.run(
            ["python3", "-c", code], app_dir=app, tmp_dir=tmp, env={}, on_line=on_line, timeout=60
        )
        assert result.exit_code == 0, lines
        probe = parse_probe("\n".join(lines))
        verdict = dict(zip(targets, probe["tcp"], strict=True))
        assert [t for t, r in verdict.items() if r == "open"] == []
        assert verdict[(network.gateway, canary.port)] == "timeout"  # dropped, not closed
        assert verdict[(outside.metadata, outside.port)] == "timeout"
        status, body = probe["http"][0]
        assert status == 200 and json.loads(body) == {"outside": True, "client": outside.host_side}
        # The step's network went with it.
        assert list(network.attachments_dir.glob("*.json")) == []
        assert not any(e.name.startswith(network.netns_prefix) for e in NETNS_DIR.iterdir())
    finally:
        await network.destroy()
