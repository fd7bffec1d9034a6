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
from slipway import pki
from slipway.cni import SandboxNetwork
from slipway.logline import LogLine, app_filter
from tests.harness import secure
from tests.harness.cluster import shims
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
        "credentials": secure.bundle(pki.Role.NODE, "test-node"),
    }
    values.update(overrides)
    return AgentConfig(**values)  # type: ignore[arg-type]


async def _runc(runc_root: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "runc",
        "--root",
        str(runc_root),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"runc {' '.join(args)} hung") from None
    return out.decode()


async def cleanup_containers(runc_root: Path, data_dir: Path) -> None:
    """runc delete -f everything under our own state root until no shim is left
    (a launch may have been under way when the supervisor was cancelled)."""
    for _ in range(100):
        ids = (await _runc(runc_root, "list", "-q")).split() if runc_root.exists() else []
        for cid in ids:
            await _runc(runc_root, "delete", "-f", cid)
        if not ids and not shims(data_dir):
            # The dynos' networks too (CNI DEL, netns, bridge, nft table).
            await SandboxNetwork(data_dir / "net").destroy()
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"containers or shims left behind in {data_dir}")


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


@contextlib.asynccontextmanager
async def running_node(
    config: AgentConfig, nats_url: str, app_name: str, lines: list[LogLine] | None = None
) -> AsyncIterator[Node]:
    """A supervisor and log sink running in this process. Leaving the context
    cancels them as an agent's death would: containers keep running."""
    rt, fetch = build_runtime(config)
    sup = DynoSupervisor(rt)
    n = Node(sup=sup, config=config, lines=lines if lines is not None else [])
    nc = await secure.nats_connect([nats_url], name="test-logs")

    async def collect(msg: object) -> None:
        n.lines.append(LogLine.decode(msg.data, msg.subject))  # type: ignore[attr-defined]

    await nc.subscribe(app_filter(app_name), cb=collect)

    await nc.flush()  # subscribed at the server before any dyno starts
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
        # Bounded, so a stuck shutdown fails the test instead of hanging it.
        _done, pending = await asyncio.wait(tasks, timeout=15)
        assert not pending, f"supervisor did not stop: {pending}"
        await asyncio.wait_for(fetch.close(), 5)
        await asyncio.wait_for(nc.close(), 5)


@pytest.fixture
async def node(data_dir: Path, nats_url: str, app_name: str) -> AsyncIterator[Node]:
    config = fast_config(data_dir, nats_url)
    try:
        async with running_node(config, nats_url, app_name) as n:
            yield n
    finally:
        await cleanup_containers(config.state_root, config.data_dir)


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


async def container_pids(node: Node, cid: str) -> list[int]:
    return await node.sup.rt.runc.ps(cid)


def app_pid(pids: list[int]) -> int:
    """The app's host pid: the python process (bash stays as the container's init)."""
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"python3" in fh.read():
                return pid
    raise AssertionError(f"no python process among {pids}")


async def test_killed_process_restarts_with_a_fresh_filesystem(
    node: Node, slug: Slug, app_name: str
):
    await node.sup.set_desired([spec(slug, "web.1", app_name)])
    up = await node.wait_state("web.1", DynoState.UP)
    assert await asyncio.to_thread(http_get, up.port, "/write?path=/app/scratch") == {
        "written": True
    }
    pid = app_pid(await container_pids(node, up.container_id))
    os.kill(pid, signal.SIGKILL)

    await node.wait_log("web.1", "Process exited with status 137")

    async def restarted() -> DynoStatus | None:
        s = node.status("web.1")
        return s if s and s.state is DynoState.UP and s.restarts == 1 else None

    again = await eventually_async(restarted, timeout=30)
    assert again.container_id == up.container_id
    assert again.port == up.port
    # Heroku's ephemeral filesystem: the file written before the crash is gone.
    body = await asyncio.to_thread(http_get, again.port, "/read?path=/app/scratch")
    assert body["content"] is None  # type: ignore[index]
    assert "State changed from up to crashed" in node.messages("web.1", "heroku")
    assert "State changed from crashed to starting" in node.messages("web.1", "heroku")


async def test_crashing_dyno_restarts_on_the_backoff_schedule(
    node: Node, slug: Slug, app_name: str
):
    crash = spec(slug, "crash.1", app_name, process_type="crash")
    await node.sup.set_desired([crash])

    async def crashed_three_times() -> bool:
        exits = [m for m in node.messages("crash.1", "heroku") if m.startswith("Process exited")]
        return len(exits) >= 3

    await eventually_async(crashed_three_times, timeout=40)
    # Crashed between restarts, with the cool-off taken from the schedule.
    status = await node.wait_state("crash.1", DynoState.CRASHED)
    assert status.exit_status == 3
    record = node.sup._dynos[crash.key].record
    schedule = node.config.timings.restart
    assert record.restart_at is not None
    assert record.restart_at - record.changed_at == pytest.approx(
        cooloff(record.crashes, schedule), abs=0.01
    )
    assert record.crashes >= 3
    assert "about to crash" in node.messages("crash.1", "app")
    heroku = node.messages("crash.1", "heroku")
    assert heroku.count("Process exited with status 3") >= 3
    assert "State changed from up to crashed" in heroku


async def test_memory_hog_is_killed_and_neighbours_are_untouched(
    node: Node, slug: Slug, app_name: str
):
    web = spec(slug, "web.1", app_name, memory_mb=64)
    hog = spec(slug, "hog.1", app_name, process_type="hog", memory_mb=64, env={"MEGS": "400"})
    await node.sup.set_desired([web, hog])
    up = await node.wait_state("web.1", DynoState.UP)

    await node.wait_log("hog.1", "Process exited with status 137")
    assert "Error R15 (Memory quota vastly exceeded)" in node.messages("hog.1", "heroku")
    # Over the quota but under twice of it: R14 is logged, the dyno lives on.
    assert await asyncio.to_thread(http_get, up.port, "/alloc?mb=90") == {"held_mb": 90}
    await node.wait_log("web.1", "Error R14 (Memory quota exceeded)")
    web_now = node.status("web.1")
    assert web_now is not None
    assert web_now.state is DynoState.UP
    assert web_now.restarts == 0
    assert web_now.memory_bytes > 64 * 1024 * 1024
    assert "Process exited" not in " ".join(node.messages("web.1", "heroku"))


async def test_sandbox_isolation(node: Node, slug: Slug, app_name: str):
    await node.sup.set_desired([spec(slug, "web.1", app_name)])
    up = await node.wait_state("web.1", DynoState.UP)
    port = up.port
    pids = await asyncio.to_thread(http_get, port, "/pids")
    assert isinstance(pids, list)
    assert 1 in pids
    assert os.getpid() not in pids or len(pids) < 10  # only the dyno's own processes
    assert len(pids) < 10

    async def writes(path: str) -> bool:
        body = await asyncio.to_thread(http_get, port, f"/write?path={path}")
        return bool(body["written"])  # type: ignore[index]

    assert await writes("/app/ok")
    assert await writes("/tmp/ok")
    for path in ("/usr/evil", "/etc/evil", "/evil", "/bin/evil"):
        assert not await writes(path), path
    shadow = await asyncio.to_thread(http_get, port, "/read?path=/etc/shadow")
    assert shadow["content"] is None  # type: ignore[index]
    body = await asyncio.to_thread(http_get, port)
    assert body["uid"] == 64000  # type: ignore[index]
    assert not Path("/evil").exists()


async def test_stop_sends_sigterm_then_sigkill_after_grace(node: Node, slug: Slug, app_name: str):
    polite = spec(slug, "web.1", app_name)
    stubborn = spec(
        slug, "web.2", app_name, process_type="web", command="python3 server.py --ignore-term"
    )
    await node.sup.set_desired([polite, stubborn])
    one = await node.wait_state("web.1", DynoState.UP)
    two = await node.wait_state("web.2", DynoState.UP)

    await node.sup.set_desired([])

    async def gone() -> bool:
        return node.sup.snapshot() == []

    await eventually_async(gone, timeout=30)

    async def last_lines_logged() -> bool:
        # A dyno leaves the snapshot as it exits; its last lines are published after.
        return all(
            "State changed from up to down" in node.messages(name, "heroku")
            for name in ("web.1", "web.2")
        )

    await eventually_async(last_lines_logged, timeout=10)
    polite_log = node.messages("web.1", "heroku")
    assert "Stopping all processes with SIGTERM" in polite_log
    assert "Process exited with status 143" in polite_log
    assert not any("R12" in m for m in polite_log)
    stubborn_log = node.messages("web.2", "heroku")
    assert "Stopping all processes with SIGTERM" in stubborn_log
    assert (
        "Error R12 (Exit timeout) -> At least one process failed to exit within 1.5 seconds "
        "of SIGTERM"
    ) in stubborn_log
    assert "Process exited with status 137" in stubborn_log
    assert "State changed from up to down" in stubborn_log
    states = await node.sup.rt.runc.list()
    assert {s.id for s in states} & {one.container_id, two.container_id} == set()
    assert not list((node.config.data_dir / "dynos").iterdir())


async def test_web_dyno_that_never_binds_hits_the_boot_timeout(
    node: Node, slug: Slug, app_name: str
):
    # A web process that never listens on $PORT (the worker program).
    lazy = spec(slug, "web.1", app_name, process_type="web", command="python3 worker.py")
    await node.sup.set_desired([lazy])
    await node.wait_log("web.1", "Error R10 (Boot timeout)", timeout=30)
    heroku = node.messages("web.1", "heroku")
    assert (
        "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 6 seconds of launch"
    ) in heroku
    await node.wait_log("web.1", "State changed from starting to crashed")
    assert "Process exited with status 137" in node.messages("web.1", "heroku")


async def test_restart_and_stop_one_dyno(node: Node, slug: Slug, app_name: str):
    web = spec(slug, "web.1", app_name)
    await node.sup.set_desired([web])
    up = await node.wait_state("web.1", DynoState.UP)

    await node.sup.restart(web.key)
    await node.wait_log("web.1", "Process exited with status 143")

    async def new_process() -> DynoStatus | None:
        s = node.status("web.1")
        fresh = s and s.state is DynoState.UP and s.started_at > up.started_at
        return s if fresh else None

    again = await eventually_async(new_process, timeout=30)
    assert await asyncio.to_thread(http_get, again.port)
    assert node.status("web.1").restarts == 0  # type: ignore[union-attr]

    await node.sup.stop_dyno(web.key)
    down = await node.wait_state("web.1", DynoState.DOWN)
    assert down.exit_status == 143
    assert await node.sup.rt.runc.state(up.container_id) is None


async def test_exit_while_the_agent_was_away_is_reported_and_restarted(
    data_dir: Path, nats_url: str, slug: Slug, app_name: str
):
    config = fast_config(data_dir, nats_url)
    lines: list[LogLine] = []
    web = spec(slug, "web.1", app_name)
    try:
        async with running_node(config, nats_url, app_name, lines) as first:
            await first.sup.set_desired([web])
            up = await first.wait_state("web.1", DynoState.UP)
        # The "agent" is gone; its dyno dies meanwhile.
        os.kill(app_pid(await first.sup.rt.runc.ps(up.container_id)), signal.SIGKILL)
        status_file = next((data_dir / "dynos").iterdir()) / "status.json"
        await eventually_async(lambda: asyncio.sleep(0, status_file.exists()), timeout=10)

        async with running_node(config, nats_url, app_name, lines) as second:
            # No desired set from a controller yet: the adopted dyno is kept,
            # its exit reported, and it is restarted on the schedule.
            await second.wait_log("web.1", "Process exited with status 137")

            async def back_up() -> DynoStatus | None:
                s = second.status("web.1")
                return s if s and s.state is DynoState.UP and s.restarts == 1 else None

            again = await eventually_async(back_up, timeout=30)
            assert again.container_id == up.container_id
            assert await asyncio.to_thread(http_get, again.port)
    finally:
        await cleanup_containers(config.state_root, config.data_dir)
