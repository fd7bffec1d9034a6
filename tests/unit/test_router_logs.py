"""Router log shipping: the data plane's batches published one message per app,
cut at line ends, bounded while NATS is away."""

from __future__ import annotations

import asyncio

from router.config import LogConfig
from router.logs import LogShipper, split_batch
from slipway.logline import LogLine, decode_batch, encode_batch
from tests.harness.wait import eventually_async


def lines(app: str, *messages: str) -> bytes:
    return encode_batch(LogLine(app, "heroku", "router", m, ts=1.0) for m in messages) + b"\n"


class FakeNats:
    """Stands in for a nats-py client: just records what was published."""

    def __init__(self) -> None:
        self.is_connected = True
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, payload))


class FakePlane:
    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes]] = []

    def take_logs(self) -> list[tuple[str, bytes]]:
        taken, self.pending = self.pending, []
        return taken


def test_split_batch_cuts_at_line_ends() -> None:
    batch = b"aaaa\nbb\ncccccc\nd\n"
    assert split_batch(batch, limit=100) == [batch]
    assert split_batch(batch, limit=8) == [b"aaaa\nbb\n", b"cccccc\n", b"d\n"]
    # A line longer than the limit travels alone, whole.
    assert split_batch(b"x\n" + b"y" * 20 + b"\nz\n", limit=8) == [
        b"x\n",
        b"y" * 20 + b"\n",
        b"z\n",
    ]


async def test_one_message_per_app_with_every_line_in_order() -> None:
    plane = FakePlane()
    shipper = LogShipper(LogConfig(servers=("nats://x",)), source=plane.take_logs)
    plane.pending = [("demo", lines("demo", "a", "b", "c")), ("api", lines("api", "x"))]
    shipper.emit("demo", "from the control plane")
    fake = FakeNats()
    shipper._nc = fake
    shipper.collect()
    await shipper.publish_waiting()
    assert [s for s, _ in fake.sent] == ["logs.demo.router", "logs.api.router", "logs.demo.router"]
    demo = decode_batch(fake.sent[0][1], fake.sent[0][0])
    assert [(line.message, line.index) for line in demo] == [("a", 0), ("b", 1), ("c", 2)]
    emitted = decode_batch(fake.sent[2][1], fake.sent[2][0])
    assert [(x.source, x.process, x.message) for x in emitted] == [
        ("heroku", "router", "from the control plane")
    ]
    assert shipper.published == 5 and shipper.messages == 3


async def test_the_oldest_lines_are_dropped_past_the_bound() -> None:
    plane = FakePlane()
    shipper = LogShipper(LogConfig(servers=("nats://x",), queue_size=3), source=plane.take_logs)
    plane.pending = [("demo", lines("demo", "1", "2"))]
    shipper.collect()
    plane.pending = [("demo", lines("demo", "3", "4", "5"))]
    shipper.collect()
    assert shipper.dropped == 2
    fake = FakeNats()
    shipper._nc = fake
    await shipper.publish_waiting()
    kept = [line.message for _, data in fake.sent for line in decode_batch(data)]
    assert kept == ["3", "4", "5"]


async def test_nothing_published_while_disconnected() -> None:
    plane = FakePlane()
    shipper = LogShipper(LogConfig(servers=("nats://x",)), source=plane.take_logs)
    fake = FakeNats()
    fake.is_connected = False
    shipper._nc = fake
    plane.pending = [("demo", lines("demo", "kept for later"))]
    shipper.collect()
    await shipper.publish_waiting()
    assert fake.sent == [] and shipper.dropped == 0
    fake.is_connected = True
    await shipper.publish_waiting()
    assert len(fake.sent) == 1


async def test_without_nats_lines_are_dropped_and_counted() -> None:
    plane = FakePlane()
    shipper = LogShipper(LogConfig(servers=(), flush_interval=0.01), source=plane.take_logs)
    plane.pending = [("demo", lines("demo", "x", "y"))]
    task = asyncio.create_task(shipper.run())

    async def dropped() -> bool:
        return shipper.dropped == 2

    try:
        await eventually_async(dropped, timeout=5)
    finally:
        task.cancel()
