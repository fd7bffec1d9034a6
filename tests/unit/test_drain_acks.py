"""When a drain worker acknowledges a LOGS message, with stand-ins for the consumer
and the sender (no NATS): only once every line of it is confirmed, so a new owner
restarting after the acknowledged floor loses none of a batch. The real consumer
and receivers are in tests/integration/test_log_drains.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from controller.bus.drain_send import DeliveryError, Item
from controller.bus.drains import DrainWorker
from controller.core.drains import DrainRecord
from slipway.logline import LogLine, encode_batch

SUBJECT = "logs.shop.router"


@dataclass
class Message:
    """What the worker uses of a JetStream message."""

    seq: int
    data: bytes
    acked: list[int]
    subject: str = SUBJECT

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(sequence=SimpleNamespace(stream=self.seq))

    async def ack(self) -> None:
        self.acked.append(self.seq)


@dataclass
class Consumer:
    """Hands out the queued messages on the next fetch."""

    queued: list[Message] = field(default_factory=list)

    async def fetch(self, batch: int, timeout: float) -> list[Message]:
        out, self.queued = self.queued[:batch], self.queued[batch:]
        return out


@dataclass
class Receiver:
    """A sender whose receiver confirms only ``allow`` more lines, or is ``down``."""

    allow: int = 0
    down: bool = False
    held: list[Item] = field(default_factory=list)
    got: list[str] = field(default_factory=list)

    async def send(self, items: Sequence[Item]) -> list[int]:
        self.held.extend(items)
        if self.down:
            raise DeliveryError("receiver away")
        return self.confirmed()

    def confirmed(self) -> list[int]:
        done, self.held = self.held[: self.allow], self.held[self.allow :]
        self.allow -= len(done)
        self.got.extend(line.message for _, line in done)
        return [seq for seq, _ in done]

    def outstanding(self) -> int:
        return len(self.held)

    async def close(self) -> None:
        pass


def requests(*paths: str) -> bytes:
    return encode_batch([LogLine("shop", "heroku", "router", f"path={p}", 1.0) for p in paths])


def worker(receiver: Receiver, buffer_lines: int = 1500) -> DrainWorker:
    record = DrainRecord("d1", "shop", "syslog://127.0.0.1:1", "d.1", 0.0)
    return DrainWorker(record, None, receiver, buffer_lines=buffer_lines)  # type: ignore[arg-type]


async def test_a_batch_is_acknowledged_only_once_all_its_lines_are_confirmed() -> None:
    acked: list[int] = []
    consumer = Consumer(
        [Message(10, requests("a", "b", "c"), acked), Message(11, requests("d"), acked)]
    )
    receiver = Receiver(allow=2)
    drain = worker(receiver)
    await drain._read(consumer, wait=0)
    await drain._deliver()
    assert receiver.got == ["path=a", "path=b"]
    assert acked == []  # a new owner would start at message 10 again: c is not lost
    receiver.allow = 1
    await drain._deliver()
    assert acked == [10]
    receiver.allow = 1
    await drain._deliver()
    assert acked == [10, 11]
    assert receiver.got == ["path=a", "path=b", "path=c", "path=d"]
    assert drain.delivered == 4


async def test_lines_dropped_while_away_never_acknowledge_lines_still_held() -> None:
    acked: list[int] = []
    receiver = Receiver(down=True)
    drain = worker(receiver, buffer_lines=2)
    consumer = Consumer([Message(10, requests("a", "b"), acked)])
    await drain._read(consumer, wait=0)
    with pytest.raises(DeliveryError):
        await drain._deliver()
    assert receiver.outstanding() == 2  # message 10 is the sender's to retry
    consumer.queued = [
        Message(11, requests("c", "d"), acked),
        Message(12, requests("e", "f"), acked),
        Message(13, requests("g"), acked),
    ]
    await drain._read(consumer, wait=0)
    # The newest two lines are kept; message 11 went whole, 12 only in part.
    assert (drain.dropped, acked) == (3, [11])

    receiver.down, receiver.allow = False, 100
    await drain._deliver()  # the held lines first
    await drain._deliver()
    assert receiver.got == ["path=a", "path=b", "path=f", "path=g"]
    assert acked == [11, 10, 12, 13]


async def test_an_unreadable_message_is_sent_as_a_note_and_acknowledged() -> None:
    acked: list[int] = []
    receiver = Receiver(allow=10)
    drain = worker(receiver)
    await drain._read(Consumer([Message(7, b"\xff not a line", acked)]), wait=0)
    await drain._deliver()
    assert (receiver.got, acked) == (["(unreadable line)"], [7])
