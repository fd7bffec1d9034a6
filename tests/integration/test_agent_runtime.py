"""The dyno runtime on real runc and nats-server, driven through DynoSupervisor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.config import AgentConfig, RestartSchedule, Timings
from agent.main_runtime import build_runtime
from agent.model import DynoSpec, DynoState, DynoStatus
from agent.policy import cooloff
from agent.supervisor import DynoSupervisor
from slipway import objstore
from slipway.logline import LogLine, subject
from tests.harness.slugs import Slug, upload_slug
from tests.harness.wait import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = Timings(
    boot_timeout=6.0,
    stop_grace=1.5,
    up_probe_interval=0.1,
    memory_interval=0.2,
    r14_interval=5.0,
    launch_timeout=20.0,
    restart=RestartSchedule(immediate=1, initial=1.0, factor=2.0, cap=4.0, reset_after=60.0),
)


def fast_config(data_dir: Path, nats_url: str, **overrides: object) -> AgentConfig:
    base = random.randrange(30000, 60000, 100)
    values: dict[str, object] = {
        "data_dir": data_dir,
        "node": "test-node",
        "advertise_address": "127.0.0.1",
        "port_range": (base, base + 99),
        "memory_mb": 4096,
        "nats_servers": (nats_url,),
        "timings": FAST,
        "container_prefix": f"t{uuid.uuid4().hex[:8]}",
    }
    values.update(overrides)
    return AgentConfig(**values)  # type: ignore[arg-type]


async def cleanup_containers(runc_root: Path) -> None:
    """runc delete -f everything under our own state root, so nothing leaks."""
    if not runc_root.exists():
        return
    proc = await asyncio.create_subprocess_exec(
        "runc", "--root", str(runc_root), "list", "-q", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    for cid in out.decode().split():
        p = await asyncio.create_subprocess_exec(
            "runc", "--root", str(runc_root), "delete", "-f", cid
        )
        await p.wait()


@dataclass
class Node:
    sup: DynoSupervisor
    config: AgentConfig
    lines: list[LogLine] = field(default_factory=list)

    def status(self, name: str) -> DynoStatus | None:
        for s in self.sup.snapshot():
            if s.name == name:
                return s
        return None

    def messages(self, process: str, source: str | None = None) -> list[str]:
        return [
            line.message
            for line in self.lines
            if line.process == process and (source is None or line.source == source)
        ]

    async def wait_state(self, name: str, state: DynoState, timeout: float = 30.0) -> DynoStatus:
        async def check() -> DynoStatus | None:
            s = self.status(name)
            return s if s is not None and s.state is state else None

        return await eventually_async(check, timeout=timeout)

    async def wait_log(self, process: str, text: str, timeout: float = 30.0) -> None:
        async def check() -> bool:
            return any(text in m for m in self.messages(process))

        await eventually_async(check, timeout=timeout)


def spec(slug: Slug, name: str, app: str, **kw: object) -> DynoSpec:
    ptype = str(kw.pop("process_type", name.split(".")[0]))
    values: dict[str, object] = {
        "app": app,
        "name": name,
        "process_type": ptype,
        "release": 1,
        "command": slug.process_types[ptype],
        "slug_digest": slug.digest,
        "memory_mb": 256,
        "max_processes": 64,
        "instance_id": uuid.uuid4().hex,
    }
    values.update(kw)
    return DynoSpec(**values)  # type: ignore[arg-type]


def http_get(port: int, path: str = "/") -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
async def slug(nats_url: str) -> Slug:
    return await upload_slug(nats_url)


@pytest.fixture
def app_name() -> str:
    return f"app{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def node(data_dir: Path, nats_url: str, app_name: str) -> AsyncIterator[Node]:
    config = fast_config(data_dir, nats_url)
    rt, fetch = build_runtime(config)
    sup = DynoSupervisor(rt)
    n = Node(sup=sup, config=config)
    nc = await objstore.connect([nats_url], name="test-logs")

    async def collect(msg: object) -> None:
        n.lines.append(LogLine.decode(msg.data))  # type: ignore[attr-defined]

    await nc.subscribe(subject(app_name), cb=collect)
    tasks = [asyncio.create_task(sup.run()), asyncio.create_task(rt.sink.run())]
    await asyncio.wait_for(sup.ready.wait(), 30)
    try:
        yield n
    finally:
        durations = rt.start_durations
        if durations:
            print(f"container start median {statistics.median(durations) * 1000:.0f} ms")
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await fetch.close()
        await nc.close()
        await cleanup_containers(config.state_root)


async def test_web_and_worker_dynos_boot_serve_and_log(node: Node, slug: Slug, app_name: str):
    web = spec(slug, "web.1", app_name, env={"GREETING": "hello"})
    worker = spec(slug, "worker.1", app_name)
    await node.sup.set_desired([web, worker])

    up = await node.wait_state("web.1", DynoState.UP)
    assert up.port >= node.config.port_range[0]
    body = await asyncio.to_thread(http_get, up.port)
    assert body == {
        "dyno": "web.1",
        "port": str(up.port),
        "greeting": "hello",
        "profile_d": "sourced-web.1",
        "home": "/app",
        "uid": 64000,
        "gid": 64000,
        "pid": body["pid"],  # type: ignore[index]
        "hostname": "web.1",
    }
    await node.wait_state("worker.1", DynoState.UP)
    await node.wait_log("worker.1", "tick 3 worker.1")
    await node.wait_log("web.1", "listening on")
    heroku = node.messages("web.1", "heroku")
    assert heroku[:2] == [
        "Starting process with command `python3 server.py`",
        "State changed from starting to up",
    ]
    assert all(s.state is DynoState.UP for s in node.sup.snapshot())
