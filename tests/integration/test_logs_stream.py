"""`slipway logs` against a real controller, etcd and nats-server.

Lines are published on ``logs.{app}`` exactly as producers do (JSON LogLine on
core NATS, one per message or, as the router does, several per message); the
controller's LOGS stream stores them and StreamLogs reads them.
Each test uses its own app names: the NATS server (and its LOGS stream) is
shared by the whole session.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from slipway import logline
from slipway.logline import LogLine
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import platform_pb2_grpc, types_pb2
from tests.harness import secure
from tests.harness.controller import BIN, ControllerProcess
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TAIL_BUFFER = 500


@pytest.fixture
def logs_controller(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[ControllerProcess]:
    """A controller whose tail readers may fall only TAIL_BUFFER lines behind."""
    config = tmp_path / "controller.toml"
    config.write_text(f"logs_tail_buffer = {TAIL_BUFFER}\n")
    proc = ControllerProcess(
        etcd_endpoint,
        etcd_prefix,
        tmp_path / "controller",
        nats_url,
        extra_args=["--config", str(config)],
    )
    proc.start()
    yield proc
    proc.stop()


def new_app(controller: ControllerProcess) -> str:
    name = f"logs-{uuid.uuid4().hex[:8]}"
    controller.cli("apps:create", name, check=True)
    return name


def origin(line: LogLine) -> logline.Origin:
    """Who publishes ``line``: the router its lines, the controller api ones, a node the rest."""
    if line.process == "router":
        return logline.Origin.ROUTER
    return logline.Origin.CONTROLLER if line.source == "api" else logline.Origin.NODE


def publish(nats_url: str, lines: list[LogLine]) -> None:
    async def go() -> None:
        nc = await secure.nats_connect(nats_url)
        try:
            for line in lines:
                await nc.publish(logline.subject(line.app, origin(line)), line.encode())
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(go())


def publish_batches(nats_url: str, batches: list[list[LogLine]]) -> None:
    """Each list as one message (JSON Lines), as the router publishes an interval's lines."""

    async def go() -> None:
        nc = await secure.nats_connect(nats_url)
        try:
            for lines in batches:
                subject = logline.subject(lines[0].app, origin(lines[0]))
                await nc.publish(subject, logline.encode_batch(lines))
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(go())


def router_batches(app: str, sizes: list[int], first: int = 0) -> list[list[LogLine]]:
    """Router lines ``request N`` numbered across batches of these sizes."""
    now = time.time()
    batches, n = [], first
    for size in sizes:
        batches.append(
            [
                LogLine(app, "heroku", "router", f"request {i}", now + i * 1e-6)
                for i in range(n, n + size)
            ]
        )
        n += size
    return batches


def app_lines(app: str, texts: list[str], process: str = "web.1") -> list[LogLine]:
    now = time.time()
    return [LogLine(app, "app", process, text, now + i * 1e-6) for i, text in enumerate(texts)]


def messages(out: str) -> list[str]:
    return [line.split("]: ", 1)[1] for line in out.splitlines()]


def subject_count(nats_url: str, app: str) -> int:
    async def go() -> int:
        nc = await secure.nats_connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(
                logline.STREAM, subjects_filter=logline.app_filter(app)
            )
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()

    return asyncio.run(go())


def logs(controller: ControllerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return controller.cli("logs", *args)


def test_history_is_last_100_by_default_and_at_most_1500(controller: ControllerProcess) -> None:
    app = new_app(controller)
    publish(controller.nats_url, app_lines(app, [f"line {i}" for i in range(1600)]))
    # The stream keeps at most 1500 lines of this app.
    eventually(lambda: subject_count(controller.nats_url, app) == 1500, 10)

    out = logs(controller, "-a", app)
    assert out.returncode == 0, out.stderr
    assert messages(out.stdout) == [f"line {i}" for i in range(1500, 1600)]
    assert out.stdout.splitlines()[0].split(" ", 1)[1].startswith("app[web.1]: ")

    out = logs(controller, "-a", app, "-n", "1500")
    assert messages(out.stdout) == [f"line {i}" for i in range(100, 1600)]

    out = logs(controller, "-a", app, "-n", "5000")
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 1500
    assert "at most 1500 lines" in out.stderr

    out = logs(controller, "-a", app, "-n", "3")
    assert messages(out.stdout) == ["line 1597", "line 1598", "line 1599"]


def test_source_and_dyno_filters(controller: ControllerProcess) -> None:
    app = new_app(controller)
    now = time.time()
    mixed = [
        LogLine(app, "app", "web.1", "web one says hi", now),
        LogLine(app, "heroku", "router", 'at=info method=GET path="/" status=200', now + 0.001),
        LogLine(app, "app", "web.2", "web two says hi", now + 0.002),
        LogLine(app, "heroku", "web.1", "State changed from starting to up", now + 0.003),
        LogLine(app, "app", "webhook.1", "not a web dyno", now + 0.004),
        LogLine(app, "app", "worker.1", "tick 1", now + 0.005),
        LogLine(app, "api", "api", "Deploy 1234567 by admin", now + 0.006),
    ]
    publish(controller.nats_url, mixed)
    eventually(lambda: len(logs(controller, "-a", app).stdout.splitlines()) == 7)

    def shown(*args: str) -> list[str]:
        out = logs(controller, "-a", app, *args)
        assert out.returncode == 0, out.stderr
        return messages(out.stdout)

    assert shown("--source", "api") == ["Deploy 1234567 by admin"]
    assert shown("--source", "heroku") == [
        'at=info method=GET path="/" status=200',
        "State changed from starting to up",
    ]
    assert shown("--dyno", "web.1") == ["web one says hi", "State changed from starting to up"]
    assert shown("--dyno", "web") == [
        "web one says hi",
        "web two says hi",
        "State changed from starting to up",
    ]
    assert shown("--dyno", "web", "--source", "app") == ["web one says hi", "web two says hi"]
    assert shown("--dyno", "router") == ['at=info method=GET path="/" status=200']
    # Filters apply before counting: the last 2 web lines, not the web lines of the last 2.
    assert shown("--dyno", "web", "-n", "2") == [
        "web two says hi",
        "State changed from starting to up",
    ]
    bad = logs(controller, "-a", app, "--dyno", "web 1")
    assert bad.returncode == 1 and "bad dyno filter" in bad.stderr
    missing = logs(controller, "-a", "no-such-app")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_history_counts_the_lines_of_router_batches(controller: ControllerProcess) -> None:
    app = new_app(controller)
    # 20 messages of 100 lines: all kept (the stream counts messages), 2000 lines.
    publish_batches(controller.nats_url, router_batches(app, [100] * 20))
    publish(controller.nats_url, app_lines(app, ["web says hi"]))
    eventually(lambda: messages(logs(controller, "-a", app, "-n", "1").stdout) == ["web says hi"])

    def shown(*args: str) -> list[str]:
        out = logs(controller, "-a", app, *args)
        assert out.returncode == 0, out.stderr
        return messages(out.stdout)

    assert shown("-n", "3") == ["request 1998", "request 1999", "web says hi"]
    assert shown() == [f"request {i}" for i in range(1901, 2000)] + ["web says hi"]
    assert shown("-n", "1500") == [f"request {i}" for i in range(501, 2000)] + ["web says hi"]
    assert shown("--dyno", "router", "-n", "150") == [f"request {i}" for i in range(1850, 2000)]
    assert shown("--source", "app") == ["web says hi"]
    out = logs(controller, "-a", app, "-n", "2")
    assert out.stdout.splitlines()[0].split(" ", 1)[1] == "heroku[router]: request 1999"


def test_a_tail_gets_every_line_of_a_live_batch(controller: ControllerProcess) -> None:
    app = new_app(controller)
    publish(controller.nats_url, app_lines(app, ["ready"]))
    with grpc.secure_channel(controller.address, secure.channel_credentials()) as channel:
        stub = platform_pb2_grpc.PlatformServiceStub(channel)
        request = pb.StreamLogsRequest(app=app, num=1, tail=True)
        metadata = [("authorization", f"Bearer {controller.token}")]
        stream = stub.StreamLogs(request, metadata=metadata, timeout=60)
        try:
            assert [e.message for e in next(stream).lines] == ["ready"]
            publish_batches(controller.nats_url, router_batches(app, [3, 2]))
            got: list[pb.LogEntry] = []
            while len(got) < 5:
                got.extend(next(stream).lines)
        finally:
            stream.cancel()
    assert [e.message for e in got] == [f"request {i}" for i in range(5)]
    assert [e.index for e in got] == [0, 1, 2, 0, 1]
    assert got[0].seq == got[2].seq < got[3].seq == got[4].seq


def test_tail_receives_new_lines_and_ctrl_c_ends_it(controller: ControllerProcess) -> None:
    app = new_app(controller)
    publish(controller.nats_url, app_lines(app, ["before the tail"]))
    env = controller.env()
    env.update(SLIPWAY_API=controller.address, SLIPWAY_TOKEN=controller.token)
    proc = subprocess.Popen(
        [str(BIN / "slipway"), "logs", "-a", app, "--tail"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        eventually(lambda: any("before the tail" in s for s in seen), 15)
        long_line = "x" * 25_000
        publish(
            controller.nats_url,
            app_lines(app, ["after the tail", *logline.split_message(long_line)]),
        )
        eventually(lambda: any("after the tail" in s for s in seen), 10)
        eventually(lambda: sum(s.count("x") for s in seen) == 25_000, 10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    pieces = [s for s in seen if "xxxx" in s]
    assert len(pieces) == 3
    assert all(len(messages(p)[0].encode()) <= logline.MAX_LINE_BYTES for p in pieces)


def test_api_changes_leave_api_lines(controller: ControllerProcess) -> None:
    app = new_app(controller)
    controller.cli("config:set", "-a", app, "B=2", "A=1", check=True)
    with controller.client() as client:
        client.create_release(
            app, types_pb2.SlugRef(digest="0" * 64, size_bytes=1, stack="slipway-24"), {"web": "x"}
        )
        client.scale(app, [pb.FormationChange(type="web", quantity=3)])
        client.rollback(app, 2)
        client.restart_dynos(app)

    def api_lines() -> list[str]:
        return messages(logs(controller, "-a", app, "--source", "api").stdout)

    expected = [
        "Set A, B config vars by test",  # v1 is the app's initial release
        "Release v2 created by test",
        "Deploy 0000000 by test",
        "Release v3 created by test",
        "Scaled to web@3:standard-1x by test",
        "Rollback to v2 by test",
        "Release v4 created by test",
        "Restart by test",
    ]
    eventually(lambda: api_lines() == expected, 10)


def test_slow_reader_is_told_of_dropped_lines_and_fast_one_is_not(
    logs_controller: ControllerProcess,
) -> None:
    controller = logs_controller
    app = new_app(controller)
    publish(controller.nats_url, app_lines(app, ["ready"]))
    channel = grpc.secure_channel(controller.address, secure.channel_credentials())
    stub = platform_pb2_grpc.PlatformServiceStub(channel)
    metadata = [("authorization", f"Bearer {controller.token}")]
    request = pb.StreamLogsRequest(app=app, num=1, tail=True)
    slow = stub.StreamLogs(request, metadata=metadata, timeout=120)
    fast = stub.StreamLogs(request, metadata=metadata, timeout=120)
    # The history ("ready") arriving means each reader's subscription is live.
    assert [e.message for e in next(slow).lines] == ["ready"]
    assert [e.message for e in next(fast).lines] == ["ready"]

    total = 4000
    fast_lines: list[pb.LogEntry] = []

    def read_fast() -> None:
        for response in fast:
            fast_lines.extend(response.lines)
            if len(fast_lines) >= total:
                return

    reader = threading.Thread(target=read_fast, daemon=True)
    reader.start()
    try:
        # Published in steps the fast reader keeps up with (never TAIL_BUFFER behind);
        # the slow one reads nothing, so once its transport windows are full
        # (20 MB in all is far more) the controller must drop lines for it.
        pad = "y" * 5000
        step = 200
        for start in range(0, total, step):
            texts = [f"{i} {pad}" for i in range(start, start + step)]
            publish(controller.nats_url, app_lines(app, texts))
            want = start + step
            eventually(lambda: len(fast_lines) >= want, 30)  # noqa: B023 - called at once
        assert [int(e.message.split()[0]) for e in fast_lines] == list(range(total))
        assert not any(e.process == "logs" for e in fast_lines)

        # Now the slow reader catches up: what it missed is said, where it was missed.
        got: list[int] = []
        dropped = 0
        markers = []
        for response in slow:
            for e in response.lines:
                if e.source == "heroku" and e.process == "logs":
                    markers.append(e.message)
                    dropped += int(e.message.split()[0])
                else:
                    got.append(int(e.message.split()[0]))
            if len(got) + dropped >= total:
                break
        assert markers and all(m.endswith("lines dropped (reader too slow)") for m in markers)
        assert len(got) + dropped == total
        assert got == sorted(got) and len(got) >= TAIL_BUFFER
    finally:
        slow.cancel()
        fast.cancel()
        channel.close()
