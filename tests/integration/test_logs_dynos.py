"""Logs from real dynos: a real controller and agent (runc), the real CLI, and
a real router log shipper publishing beside them."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import uuid

import pytest

from router.config import LogConfig
from router.logs import LogShipper
from slipway import logline, pki
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import types_pb2
from tests.harness import secure
from tests.harness.cluster import LocalCluster
from tests.harness.controller import BIN
from tests.harness.slugs import upload_slug
from tests.harness.wait import eventually, eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ (?P<head>\w+\[[^\]]+\]): (?P<message>.*)$")
LONG = "python3 -u -c 'import time\nprint(\"L\" * 25000)\ntime.sleep(3600)'"


def messages(out: str) -> list[tuple[str, str]]:
    """(source[process], message) per line."""
    pairs = []
    for line in out.splitlines():
        match = _LINE.match(line)
        if match:  # else the rest of a message with a newline (a multi-line command)
            pairs.append((match["head"], match["message"]))
    return pairs


def ship_router_line(nats_url: str, app: str) -> None:
    """One heroku[router] line through the router's own shipper, as a router would."""

    async def go() -> None:
        shipper = LogShipper(
            LogConfig(servers=(nats_url,), flush_interval=0.01),
            credentials=secure.bundle(pki.Role.ROUTER),
        )
        task = asyncio.create_task(shipper.run())
        shipper.emit(
            app,
            f'at=info method=GET path="/" host={app}.localhost request_id=abc '
            'fwd="127.0.0.1" dyno=web.1 connect=1ms service=2ms status=200 bytes=13 protocol=http',
        )

        async def published() -> bool:
            return shipper.published >= 1

        try:
            await eventually_async(published, 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


def test_dyno_output_router_lines_tail_and_split(cluster: LocalCluster) -> None:
    cluster.add_agent("node-a")
    cli = cluster.controller.cli
    app = f"logd-{uuid.uuid4().hex[:6]}"
    cli("apps:create", app, check=True)
    slug = asyncio.run(upload_slug(cluster.controller.nats_url))
    with cluster.client() as client:
        client.create_release(
            app,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
            {"worker": slug.process_types["worker"], "long": LONG},
        )
        eventually(lambda: len(client.list_nodes().nodes) == 1, 30)
        client.scale(
            app,
            [
                pb.FormationChange(type="worker", quantity=1),
                pb.FormationChange(type="long", quantity=1),
            ],
        )

    def shown(*args: str) -> list[tuple[str, str]]:
        out = cli("logs", "-a", app, *args)
        assert out.returncode == 0, out.stderr
        return messages(out.stdout)

    # App output of a real dyno, and the dyno manager's heroku[worker.1] lines.
    eventually(lambda: any(m.startswith("tick") for _, m in shown("--dyno", "worker.1")), 60)
    eventually(
        lambda: (
            ("heroku[worker.1]", "State changed from starting to up") in shown("--dyno", "worker")
        ),
        30,
    )

    # A 25,000-byte line arrives as three pieces of at most 10,000 bytes.
    def long_pieces() -> list[str]:
        return [m for h, m in shown("--dyno", "long", "--source", "app") if m.startswith("L")]

    eventually(lambda: len(long_pieces()) == 3, 60)
    pieces = long_pieces()
    assert "".join(pieces) == "L" * 25_000
    assert all(len(p.encode()) <= logline.MAX_LINE_BYTES for p in pieces)

    # Router lines and app lines side by side in one log.
    ship_router_line(cluster.controller.nats_url, app)
    everything = eventually(lambda: shown("-n", "1500"), 10)
    heads = {h for h, _ in everything}
    assert {"heroku[router]", "app[worker.1]", "api[api]"} <= heads
    router = [m for h, m in everything if h == "heroku[router]"]
    assert router and router[0].startswith('at=info method=GET path="/"')

    # --tail follows new dyno output as it is printed.
    env = cluster.controller.env()
    env.update(SLIPWAY_API=cluster.controller.address, SLIPWAY_TOKEN=cluster.controller.token)
    tail = subprocess.Popen(
        [str(BIN / "slipway"), "logs", "-a", app, "--tail", "-n", "1", "--dyno", "worker.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ticks: list[str] = []

    def read() -> None:
        assert tail.stdout is not None
        for line in tail.stdout:
            ticks.extend(m for _, m in messages(line) if m.startswith("tick"))

    threading.Thread(target=read, daemon=True).start()
    try:
        # One line of history, then new ticks (each different) as the worker prints them.
        eventually(lambda: len(set(ticks)) >= 4, 30)
    finally:
        tail.terminate()
        try:
            tail.wait(10)
        except subprocess.TimeoutExpired:
            tail.kill()
            tail.wait(5)
