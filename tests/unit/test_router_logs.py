"""Router log lines: Heroku's format, and the bounded queue that never blocks."""

from __future__ import annotations

import asyncio

from router.config import LogConfig
from router.logs import LogShipper, format_line
from slipway.logline import LogLine
from tests.harness.wait import eventually_async


def test_info_line_in_heroku_format() -> None:
    line = format_line(
        method="GET",
        path="/",
        host="demo.example.test",
        request_id="a1b2c3d4-e5f6-4890-abcd-ef1234567890",
        fwd="1.2.3.4",
        dyno="web.1",
        connect_ms=1,
        service_ms=18,
        status=200,
        bytes_sent=13,
        protocol="http",
    )
    assert line == (
        'at=info method=GET path="/" host=demo.example.test '
        "request_id=a1b2c3d4-e5f6-4890-abcd-ef1234567890 "
        'fwd="1.2.3.4" dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=http'
    )


def test_error_line_carries_code_and_desc() -> None:
    line = format_line(
        method="POST",
        path="/x",
        host="h",
        request_id="r",
        fwd="f",
        dyno="",
        connect_ms=0,
        service_ms=30000,
        status=503,
        bytes_sent=0,
        protocol="https",
        code="H12",
        desc="Request timeout",
    )
    assert line.startswith('at=error code=H12 desc="Request timeout" method=POST path="/x" ')
    assert "dyno=none" in line and "service=30000ms" in line and line.endswith("protocol=https")


def test_path_is_quoted_safely() -> None:
    line = format_line(
        method="GET",
        path='/a"b\\c\n',
        host="h",
        request_id="r",
        fwd="f",
        dyno="web.1",
        connect_ms=0,
        service_ms=0,
        status=200,
        bytes_sent=0,
        protocol="http",
    )
    assert 'path="/a\\"b\\\\c\\n"' in line
    assert "\n" not in line


class FakeNats:
    """Stands in for a nats-py client: just records what was published."""

    def __init__(self) -> None:
        self.is_connected = True
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, payload))


async def test_emit_is_bounded_and_counts_drops() -> None:
    shipper = LogShipper(LogConfig(servers=("nats://x",), queue_size=3))
    for i in range(5):
        shipper.emit("demo", f"line {i}")
    assert shipper.dropped == 2
    fake = FakeNats()
    shipper._nc = fake
    await shipper._publish_batch()
    assert shipper.published == 3
    assert [s for s, _ in fake.sent] == ["logs.demo.router"] * 3
    line = LogLine.decode(fake.sent[0][1])
    assert (line.app, line.source, line.process, line.message) == (
        "demo",
        "heroku",
        "router",
        "line 0",
    )
    assert line.ts > 0


async def test_nothing_published_while_disconnected() -> None:
    shipper = LogShipper(LogConfig(servers=("nats://x",), queue_size=10))
    fake = FakeNats()
    fake.is_connected = False
    shipper._nc = fake
    shipper.emit("demo", "kept for later")
    await shipper._publish_batch()
    assert fake.sent == [] and shipper.dropped == 0
    fake.is_connected = True
    await shipper._publish_batch()
    assert len(fake.sent) == 1


async def test_without_nats_lines_are_dropped_and_counted() -> None:
    shipper = LogShipper(LogConfig(servers=()))
    task = asyncio.create_task(shipper.run())
    shipper.emit("demo", "x")
    shipper.emit("demo", "y")

    async def dropped() -> bool:
        return shipper.dropped == 2

    try:
        await eventually_async(dropped, timeout=5)
    finally:
        task.cancel()
