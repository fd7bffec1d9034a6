"""The release phase (Procfile `release:`) through a real controller, builder, etcd and NATS.

The agent's half of one-off dynos is being finished elsewhere, so this test
plays the agent at the controller's own seam, exactly as the contract says:
it publishes a node record, waits for the controller to place the one-off
``release.N`` placement (``kind="oneoff"``) on it, and writes the dyno's
StatusRecord as an agent would: ``down`` with the command's exit status.
Everything else is real: the CLI deploys, the builder builds, the controller
creates the pending release and finishes it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.scheduler import Placement
from slipway.client import Client
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.records import NodeRecord, StatusRecord
from slipway.v1 import types_pb2
from tests.harness.controller import BIN, ControllerProcess
from tests.integration import test_deploy_builds as base
from tests.integration.test_deploy_builds import FIXTURES, show

pytestmark = pytest.mark.integration
# The deploy suite's fixtures: this module's own nats-server, builder and controller.
deploy_nats = base.deploy_nats
builder = base.builder
ctl = base.ctl


class FakeAgentSeam:
    """Writes what an agent would: its node record, then the release dyno's exit."""

    def __init__(self, etcd_endpoint: str, prefix: str, node: str = "node-r") -> None:
        self.etcd_endpoint = etcd_endpoint
        self.keys = Keys(prefix)
        self.node = node
        self.exit_status = 0
        self.seen: list[Placement] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        async with Etcd([self.etcd_endpoint]) as etcd:
            record = NodeRecord(self.node, "127.0.0.1", 8192, (20000, 20100))
            await etcd.put(self.keys.node(self.node), record.encode())
            done: set[str] = set()
            while not self._stop.is_set():
                kvs, _ = await etcd.get_prefix(self.keys.dynos())
                for kv in kvs:
                    p = Placement.decode(kv.value)
                    if p.kind != "oneoff" or p.instance_id in done:
                        continue
                    done.add(p.instance_id)
                    self.seen.append(p)
                    status = StatusRecord(
                        app=p.app,
                        name=p.name,
                        instance_id=p.instance_id,
                        node=p.node,
                        process_type=p.type,
                        release=p.release,
                        state="down",
                        exit_status=self.exit_status,
                        changed_at=time.time(),
                    )
                    await etcd.put(self.keys.status(p.app, p.instance_id), status.encode())
                await asyncio.sleep(0.1)


@pytest.fixture
def agent_seam(etcd_endpoint: str, etcd_prefix: str) -> Iterator[FakeAgentSeam]:
    seam = FakeAgentSeam(etcd_endpoint, etcd_prefix)
    seam.start()
    yield seam
    seam.stop()


def deploy(proc: ControllerProcess, src: Path, app: str) -> subprocess.CompletedProcess[str]:
    env = proc.env() | {"SLIPWAY_API": proc.address, "SLIPWAY_TOKEN": proc.token}
    return subprocess.run(
        [str(BIN / "slipway"), "deploy", str(src), "-a", app],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_release_command_gates_the_release(
    ctl: ControllerProcess, builder: None, agent_seam: FakeAgentSeam, tmp_path: Path
) -> None:
    src = tmp_path / "release-app"
    shutil.copytree(FIXTURES / "hello-app", src)
    (src / "Procfile").write_text("worker: ./bin/hello --loop\nrelease: ./bin/hello migrate\n")
    ctl.cli("apps:create", "relapp", check=True)
    ctl.cli("buildpacks:set", str(FIXTURES / "custom-buildpack"), "-a", "relapp", check=True)
    client = Client(ctl.address, ctl.token)

    ok = deploy(ctl, src, "relapp")
    show("deploy, release command exits 0", ok)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Running release command: ./bin/hello migrate" in ok.stdout
    assert "Released v2" in ok.stdout
    assert client.get_app("relapp").app.current_release == 2
    v2 = client.get_release("relapp", 2).release
    assert v2.status == types_pb2.RELEASE_STATUS_SUCCEEDED
    assert "release" not in v2.process_types
    first = agent_seam.seen[-1]
    assert (first.name, first.kind, first.release) == ("release.2", "oneoff", 2)
    assert first.command == "./bin/hello migrate" and first.node == agent_seam.node

    agent_seam.exit_status = 3
    (src / "hello.txt").write_text("hello again\n")
    failed = deploy(ctl, src, "relapp")
    show("deploy, release command exits 3", failed)
    assert failed.returncode != 0
    assert "Release v3 failed: release command exited with status 3" in failed.stderr
    assert "dynos stay on v2" in failed.stdout
    assert client.get_app("relapp").app.current_release == 2
    assert client.get_release("relapp", 3).release.status == types_pb2.RELEASE_STATUS_FAILED
    # The one-off placements are gone once their outcome is recorded.
    assert not [d for d in client.list_dynos("relapp").dynos if d.name.startswith("release.")]
