"""Resuming a log stream by sequence: the controller's pure part, and the client's
policy against in-process stand-in PlatformService servers (real gRPC on loopback,
no etcd or NATS: those are covered by tests/integration/test_logs_failover.py)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace

import grpc
import nats.js.api
import pytest

from controller.api.logs_api import entry
from controller.bus.logs import Gap, LogFilter, LogReader, TailBuffer, consumer_config
from slipway import errors
from slipway.client import Client
from slipway.logline import LogLine
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import platform_pb2_grpc


def line(process: str, message: str) -> LogLine:
    return LogLine("a", "app", process, message, 1.0)


def feed(reader: LogReader, seqs: list[int], process: str = "web.1") -> None:
    for seq in seqs:
        reader.on_message(seq, [line(process, f"#{seq}")])


def test_lines_carry_their_sequence_into_history_tail_and_entries() -> None:
    tail = TailBuffer(10)
    reader = LogReader(5, LogFilter(), last_seq=3, tail=tail)
    feed(reader, [2, 3, 4])
    assert [x.seq for x in reader.history] == [2, 3]
    live = tail.take_nowait(10)
    assert [x.seq for x in live if isinstance(x, LogLine)] == [4]
    assert entry(reader.history[0]).seq == 2


def test_resume_sends_every_line_after_the_point_ignoring_num() -> None:
    tail = TailBuffer(10)
    reader = LogReader(1, LogFilter(), last_seq=9, tail=tail, after_seq=4)
    assert not reader.history_done.is_set()
    feed(reader, [3, 4, 5, 7, 9])  # 3 and 4 were sent before the break
    assert reader.history_done.is_set()
    assert [x.message for x in reader.history] == ["#5", "#7", "#9"]
    feed(reader, [10])
    assert [x.seq for x in tail.take_nowait(10) if isinstance(x, LogLine)] == [10]


def test_resume_keeps_filters() -> None:
    reader = LogReader(1, LogFilter(dyno="worker"), last_seq=8, tail=None, after_seq=2)
    feed(reader, [3, 4], process="worker.1")
    feed(reader, [5, 6], process="web.1")
    feed(reader, [8], process="worker.2")
    assert [x.message for x in reader.history] == ["#3", "#4", "#8"]


def test_resume_at_the_last_kept_line_sends_only_new_lines() -> None:
    tail = TailBuffer(10)
    reader = LogReader(100, LogFilter(), last_seq=9, tail=tail, after_seq=9)
    feed(reader, [9, 12])  # 9 is the client's last line: never again
    assert reader.history_done.is_set()
    assert list(reader.history) == []
    assert [x.message for x in tail.take_nowait(10) if isinstance(x, LogLine)] == ["#12"]


def test_resume_past_the_last_kept_line_is_live_at_once() -> None:
    reader = LogReader(100, LogFilter(), last_seq=9, tail=TailBuffer(10), after_seq=11)
    assert reader.history_done.is_set()


def test_consumer_starts_at_the_first_kept_line_or_at_the_resume_message() -> None:
    assert consumer_config(0).deliver_policy == nats.js.api.DeliverPolicy.ALL
    resumed = consumer_config(41)
    assert resumed.deliver_policy == nats.js.api.DeliverPolicy.BY_START_SEQUENCE
    # The resume message itself: its lines past the resume index are still to send.
    assert resumed.opt_start_seq == 41


def test_a_dropped_lines_note_carries_the_last_dropped_sequence() -> None:
    buf = TailBuffer(1)
    for seq in (5, 6, 7):
        buf.offer(LogLine("a", "app", "web.1", f"#{seq}", 1.0, seq))
    items = buf.take_nowait(10)
    assert items == [LogLine("a", "app", "web.1", "#5", 1.0, 5), Gap(2, 7)]
    note = Gap(2, 7).line("a", 1.0)
    assert (note.process, note.seq) == ("logs", 7)


# The client, against stand-in servers.

LOG = [
    pb.LogEntry(source="app", process="web.1", message=f"n {i}", seq=10 + 2 * i) for i in range(8)
]


@dataclass
class StandIn(platform_pb2_grpc.PlatformServiceServicer):
    """Serves ``log`` after (``after_seq``, ``after_index``); past ``break_after``
    lines it aborts with UNAVAILABLE (as a killed controller's stream breaks), or
    with ``end`` just ends."""

    break_after: int | None = None
    end: bool = False
    requests: list[pb.StreamLogsRequest] = field(default_factory=list)
    log: list[pb.LogEntry] = field(default_factory=lambda: LOG)

    def StreamLogs(
        self, request: pb.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamLogsResponse]:
        self.requests.append(pb.StreamLogsRequest.FromString(request.SerializeToString()))
        after = (request.after_seq, request.after_index)
        lines = [e for e in self.log if (e.seq, e.index) > after]
        if self.break_after is not None:
            lines = lines[: self.break_after]
        for e in lines:
            yield pb.StreamLogsResponse(lines=[e])
        if self.break_after is not None and not self.end:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")


@pytest.fixture
def serve() -> Iterator[list[tuple[grpc.Server, str]]]:
    servers: list[tuple[grpc.Server, str]] = []
    yield servers
    for server, _ in servers:
        server.stop(None)


def start(servers: list[tuple[grpc.Server, str]], servicer: StandIn) -> str:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    platform_pb2_grpc.add_PlatformServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    servers.append((server, address))
    return address


def test_a_broken_tail_resumes_on_the_next_controller_exactly_once(
    serve: list[tuple[grpc.Server, str]],
) -> None:
    first, second = StandIn(break_after=3), StandIn(break_after=2)
    addresses = [start(serve, first), start(serve, second)]
    notes: list[tuple[str, str]] = []
    with Client(addresses, "t") as client:
        got: list[str] = []
        for e in client.stream_logs("a", tail=True, on_resume=lambda *n: notes.append(n)):
            got.append(e.message)
            if len(got) == len(LOG):
                break
    assert got == [e.message for e in LOG]
    assert [r.after_seq for r in first.requests] == [0, LOG[4].seq]
    assert [r.after_seq for r in second.requests] == [LOG[2].seq]
    assert all(r.tail and r.app == "a" for r in first.requests + second.requests)
    assert notes == [(addresses[0], "Socket closed"), (addresses[1], "Socket closed")]


def test_a_tail_that_ends_is_resumed_too(serve: list[tuple[grpc.Server, str]]) -> None:
    ending, other = StandIn(break_after=2, end=True), StandIn(break_after=8)
    addresses = [start(serve, ending), start(serve, other)]
    with Client(addresses, "t") as client:
        lines = client.stream_logs("a", tail=True)
        got = [next(lines).message for _ in range(len(LOG))]
        lines.close()
    assert got == [e.message for e in LOG]
    assert [r.after_seq for r in other.requests] == [LOG[1].seq]


def test_history_alone_broken_midway_is_an_error_as_before(
    serve: list[tuple[grpc.Server, str]],
) -> None:
    broken, other = StandIn(break_after=2), StandIn()
    addresses = [start(serve, broken), start(serve, other)]
    with Client(addresses, "t") as client:
        got: list[str] = []
        with pytest.raises(errors.Unavailable, match="Socket closed"):
            for e in client.stream_logs("a"):
                got.append(e.message)
    assert got == ["n 0", "n 1"]
    assert other.requests == []


def test_a_tail_with_nothing_reachable_gives_up_after_a_few_rounds(
    serve: list[tuple[grpc.Server, str]],
) -> None:
    always_down = StandIn(break_after=0)
    address = start(serve, always_down)
    with Client(address, "t") as client:
        with pytest.raises(errors.Unavailable, match=f"cannot reach the controller at {address}"):
            list(client.stream_logs("a", tail=True))
    assert len(always_down.requests) == 3


# Batches: several lines in one stream message, told apart by their index.

BATCHED = [
    pb.LogEntry(source="heroku", process="router", message=f"r {seq}.{index}", seq=seq, index=index)
    for seq, count in ((10, 3), (12, 1), (15, 4))
    for index in range(count)
]


def test_a_tail_broken_inside_a_batch_resumes_at_the_next_line_of_it(
    serve: list[tuple[grpc.Server, str]],
) -> None:
    first = StandIn(break_after=2, log=BATCHED)
    second = StandIn(break_after=4, log=BATCHED)
    third = StandIn(log=BATCHED)
    addresses = [start(serve, first), start(serve, second), start(serve, third)]
    with Client(addresses, "t") as client:
        lines = client.stream_logs("a", tail=True)
        got = [next(lines).message for _ in range(len(BATCHED))]
        lines.close()
    assert got == [e.message for e in BATCHED]
    assert [(r.after_seq, r.after_index) for r in second.requests] == [(10, 1)]
    assert [(r.after_seq, r.after_index) for r in third.requests] == [(15, 1)]


def batch(seq: int, *texts: str, process: str = "router") -> tuple[int, list[LogLine]]:
    return seq, [
        LogLine("a", "heroku", process, text, 1.0, index=i) for i, text in enumerate(texts)
    ]


def test_resume_inside_a_batch_sends_its_later_lines_then_the_rest() -> None:
    tail = TailBuffer(10)
    reader = LogReader(1, LogFilter(), last_seq=12, tail=tail, after_seq=10, after_index=1)
    for seq, lines in (batch(10, "a", "b", "c", "d"), batch(12, "e", "f"), batch(13, "g")):
        reader.on_message(seq, lines)
    assert [(x.message, x.seq, x.index) for x in reader.history] == [
        ("c", 10, 2),
        ("d", 10, 3),
        ("e", 12, 0),
        ("f", 12, 1),
    ]
    assert [(x.message, x.seq) for x in tail.take_nowait(10) if isinstance(x, LogLine)] == [
        ("g", 13)
    ]


def test_a_dropped_lines_note_inside_a_batch_carries_the_last_dropped_index() -> None:
    buf = TailBuffer(1)
    for line in batch(5, "a", "b", "c")[1]:
        buf.offer(replace(line, seq=5))
    assert [(x.seq, x.index) for x in buf.take_nowait(10)] == [(5, 0), (5, 2)]
    note = entry(Gap(2, 5, 2).line("a", 1.0))
    assert (note.process, note.seq, note.index) == ("logs", 5, 2)
