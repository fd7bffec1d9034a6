"""The agent as a real process: its gRPC link, kill -9 and adoption, controller loss.

A small NodeService stands in for the controller (the real one is tested on
its own); runc, nats-server and the agent are all real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent import convert
from agent.model import DynoSpec
from slipway import engines, objstore
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.logline import LogLine, subject
from slipway.v1 import node_pb2 as pb
from slipway.v1 import node_pb2_grpc
from tests.harness.slugs import Slug, upload_slug
from tests.harness.wait import eventually_async
from tests.integration.test_agent_runtime import cleanup_containers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = {
    "boot_timeout": 10,
    "stop_grace": 2,
    "up_probe_interval": 0.1,
    "memory_interval": 0.5,
    "heartbeat_interval": 0.5,
    "rpc_timeout": 3,
    "reconnect_initial": 0.1,
    "reconnect_max": 0.5,
    "restart": {"immediate": 1, "initial": 1, "cap": 4},
}


class FakeController(node_pb2_grpc.NodeServiceServicer):
    """Registers agents, sends one desired set per stream, keeps what it hears."""

    def __init__(self, desired: list[DynoSpec]) -> None:
        self.desired = desired
        self.registrations: list[pb.RegisterRequest] = []
        self.heartbeats: list[pb.Heartbeat] = []
        self.events: list[pb.DynoStatus] = []
        self.streams = 0

    async def Register(self, request, context):
        self.registrations.append(request)
        return pb.RegisterResponse(
            session_id=uuid.uuid4().hex, heartbeat_interval_seconds=1, ttl_seconds=10
        )

    async def Connect(self, request_iterator, context):
        self.streams += 1
        yield pb.ControllerMessage(
            desired=pb.DesiredDynos(dynos=[convert.spec_to_pb(s) for s in self.desired])
        )
        async for msg in request_iterator:
            if msg.HasField("heartbeat"):
                self.heartbeats.append(msg.heartbeat)
            elif msg.HasField("event"):
                self.events.append(msg.event.dyno)

    def latest(self) -> dict[str, pb.DynoStatus]:
        if not self.heartbeats:
            return {}
        return {d.name: d for d in self.heartbeats[-1].dynos}


@contextlib.asynccontextmanager
async def serve(controller: FakeController, port: int) -> AsyncIterator[grpc.aio.Server]:
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(controller, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


def start_agent(
    data_dir: Path,
    controller_port: int,
    nats_url: str,
    prefix: str,
    base: int,
    etcd: tuple[str, str],
):
    log = open(data_dir.parent / "agent.log", "ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "--controllers",
            f"127.0.0.1:{controller_port}",
            "--node",
            "node-a",
            "--data-dir",
            str(data_dir),
            "--nats",
            nats_url,
            "--port-range",
            f"{base}-{base + 99}",
            "--memory-mb",
            "2048",
            "--container-prefix",
            prefix,
            "--timings",
            json.dumps(TIMINGS),
            "--etcd",
            etcd[0],
            "--etcd-prefix",
            etcd[1],
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def get(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        return dict(json.loads(resp.read()))


async def test_agent_kill9_adopts_running_dynos_and_survives_controller_loss(
    data_dir: Path, nats_url: str, etcd_endpoint: str, etcd_prefix: str
):
    slug: Slug = await upload_slug(nats_url)
    app = f"app{uuid.uuid4().hex[:8]}"
    specs = [
        DynoSpec(
            app=app,
            name=name,
            process_type=name.split(".")[0],
            release=1,
            command=slug.process_types[name.split(".")[0]],
            env={"GREETING": "adopted"},
            slug_digest=slug.digest,
            memory_mb=128,
            max_processes=64,
            instance_id=uuid.uuid4().hex,
        )
        for name in ("web.1", "worker.1")
    ]
    controller = FakeController(specs)
    port = engines.free_port()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    base = random.randrange(30000, 60000, 100)
    lines: list[LogLine] = []
    nc = await objstore.connect([nats_url], name="test-adoption-logs")

    async def collect(msg) -> None:  # type: ignore[no-untyped-def]
        lines.append(LogLine.decode(msg.data))

    await nc.subscribe(subject(app), cb=collect)
    agent = start_agent(data_dir, port, nats_url, prefix, base, (etcd_endpoint, etcd_prefix))
    try:
        async with serve(controller, port):

            async def both_up() -> dict[str, pb.DynoStatus] | None:
                latest = controller.latest()
                ok = len(latest) == 2 and all(d.state == pb.DYNO_STATE_UP for d in latest.values())
                return latest if ok else None

            before = await eventually_async(both_up, timeout=60)
            reg = controller.registrations[0]
            assert (reg.node, reg.advertise_address, reg.memory_mb) == ("node-a", "127.0.0.1", 2048)
            assert controller.heartbeats[-1].memory_total_bytes > 0
            assert {e.state for e in controller.events} >= {pb.DYNO_STATE_UP}
            web_port = before["web.1"].port
            # Presence in etcd: the node, and a route for the up web dyno.
            keys = Keys(etcd_prefix)
            async with Etcd([etcd_endpoint]) as etcd:

                async def route() -> object:
                    kv = await etcd.get(keys.route_dyno(app, specs[0].instance_id))
                    return kv and json.loads(kv.value)

                assert await eventually_async(route, timeout=20) == {
                    "app": app,
                    "dyno": "web.1",
                    "address": f"127.0.0.1:{web_port}",
                    "node": "node-a",
                    "release": 1,
                }
                assert await etcd.get(keys.node("node-a")) is not None
            web_cid = before["web.1"].container_id
            # Host pids (inside the pid namespace the app is always pid 2).
            first_pids = await _runc_pids(data_dir / "runc", web_cid)
            assert first_pids

            # kill -9 of the agent: the dynos keep running and serving.
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(10)
            assert (await asyncio.to_thread(get, web_port))["greeting"] == "adopted"
            ticks_before = sum(1 for ln in lines if ln.process == "worker.1")

            agent = start_agent(
                data_dir, port, nats_url, prefix, base, (etcd_endpoint, etcd_prefix)
            )

            async def readopted() -> dict[str, pb.DynoStatus] | None:
                if controller.streams < 2 or len(controller.registrations) < 2:
                    return None
                return await both_up()

            after = await eventually_async(readopted, timeout=60)
            # Same containers, not duplicated, not restarted.
            assert controller.registrations[1].dynos[0].container_id in {
                d.container_id for d in before.values()
            }
            for name in ("web.1", "worker.1"):
                assert after[name].container_id == before[name].container_id
                assert after[name].restarts == 0
            runc_ids = await _runc_ids(data_dir / "runc")
            assert sorted(runc_ids) == sorted(d.container_id for d in before.values())
            assert await _runc_pids(data_dir / "runc", web_cid) == first_pids

            # Output keeps flowing after adoption.
            async def more_ticks() -> bool:
                return sum(1 for ln in lines if ln.process == "worker.1") > ticks_before + 3

            await eventually_async(more_ticks, timeout=20)

        # The controller is gone: dynos keep running and serving.
        sessions = controller.streams
        assert (await asyncio.to_thread(get, web_port))["dyno"] == "web.1"
        assert await _runc_pids(data_dir / "runc", web_cid) == first_pids
        async with serve(controller, port):

            async def reconnected() -> bool:
                return controller.streams > sessions and bool(await both_up())

            await eventually_async(reconnected, timeout=30)
            assert await _runc_pids(data_dir / "runc", web_cid) == first_pids
            latest = controller.latest()
            assert all(d.restarts == 0 for d in latest.values())
            assert sorted(await _runc_ids(data_dir / "runc")) == sorted(
                d.container_id for d in before.values()
            )
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)
        await nc.close()
        await cleanup_containers(data_dir / "runc", data_dir)


async def _runc_ids(root: Path) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "runc", "--root", str(root), "list", "-q", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode().split()


async def _runc_pids(root: Path, cid: str) -> list[int]:
    proc = await asyncio.create_subprocess_exec(
        "runc", "--root", str(root), "ps", "--format", "json", cid, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return sorted(json.loads(out or b"[]"))
