"""Log messages holding several lines (the router's batches): the wire format and
how `logs -n` counts them, without servers."""

from __future__ import annotations

import json

import pytest

from controller.bus.logs import Gap, LogFilter, LogReader, TailBuffer
from slipway import logline
from slipway.logline import LogLine, decode_batch, encode_batch

ROUTER = "logs.a.router"


def router_line(message: str, ts: float = 1.0) -> LogLine:
    return LogLine("a", "heroku", "router", message, ts)


def test_a_batch_decodes_to_its_lines_in_order_with_their_positions() -> None:
    lines = [router_line(f"at=info path=/{i}", 1.0 + i) for i in range(3)]
    decoded = decode_batch(encode_batch(lines), ROUTER)
    assert [(x.message, x.ts, x.index) for x in decoded] == [
        ("at=info path=/0", 1.0, 0),
        ("at=info path=/1", 2.0, 1),
        ("at=info path=/2", 3.0, 2),
    ]
    assert all(x.seq == 0 for x in decoded)  # the stream numbers messages, not the producer


def test_a_single_line_message_as_published_today_is_a_batch_of_one() -> None:
    line = LogLine("a", "app", "web.1", "hello", 5.0)
    assert encode_batch([line]) == line.encode()
    assert decode_batch(line.encode(), "logs.a.node") == [line]


def test_a_trailing_newline_ends_the_last_line_and_adds_none() -> None:
    data = encode_batch([router_line("one"), router_line("two")]) + b"\n"
    assert [x.message for x in decode_batch(data, ROUTER)] == ["one", "two"]


def test_newlines_inside_a_message_do_not_split_it() -> None:
    data = encode_batch([router_line("multi\nline"), router_line("next")])
    assert data.count(b"\n") == 1
    assert [x.message for x in decode_batch(data)] == ["multi\nline", "next"]


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        b"",  # an empty line between two lines
        b"[1, 2]",
        json.dumps({"source": "heroku", "process": "router"}).encode(),  # no message
        LogLine("a", "app", "web.1", "a dyno line from the router?", 1.0).encode(),  # untrusted
    ],
    ids=["garbled", "empty", "array", "incomplete", "untrusted"],
)
def test_a_bad_line_in_a_batch_is_skipped_and_the_others_keep_their_index(bad: bytes) -> None:
    data = b"\n".join([router_line("first").encode(), bad, router_line("third").encode()])
    decoded = decode_batch(data, ROUTER)
    assert [(x.message, x.index) for x in decoded] == [("first", 0), ("third", 2)]


def test_nothing_readable_is_an_empty_batch_and_an_empty_one_cannot_be_made() -> None:
    assert decode_batch(b"garbage") == []
    assert decode_batch(b"") == []
    with pytest.raises(ValueError):
        encode_batch([])


def test_without_a_subject_origins_are_not_checked() -> None:
    forged = LogLine("a", "app", "web.1", "x", 1.0).encode()
    assert decode_batch(forged, ROUTER) == []
    assert [x.message for x in decode_batch(forged)] == ["x"]


def feed(reader: LogReader, messages: list[list[LogLine]], first_seq: int = 1) -> None:
    for seq, lines in enumerate(messages, start=first_seq):
        reader.on_message(
            seq, decode_batch(encode_batch(lines), logline.subject("a", origin(lines)))
        )


def origin(lines: list[LogLine]) -> logline.Origin:
    return logline.Origin.ROUTER if lines[0].process == "router" else logline.Origin.NODE


def requests(first: int, count: int) -> list[LogLine]:
    return [router_line(f"request {i}") for i in range(first, first + count)]


def test_history_counts_lines_not_messages() -> None:
    reader = LogReader(5, LogFilter(), last_seq=3, tail=None)
    feed(reader, [requests(0, 4), requests(4, 4), requests(8, 3)])
    assert reader.history_done.is_set()
    assert [x.message for x in reader.history] == [f"request {i}" for i in range(6, 11)]
    assert [(x.seq, x.index) for x in reader.history] == [(2, 2), (2, 3), (3, 0), (3, 1), (3, 2)]


def test_filters_pick_lines_out_of_batches_before_counting() -> None:
    dyno = [LogLine("a", "app", "web.1", f"web says {i}", 1.0) for i in range(2)]
    reader = LogReader(3, LogFilter(dyno="router"), last_seq=3, tail=None)
    feed(reader, [requests(0, 3), dyno, requests(3, 2)])
    assert [x.message for x in reader.history] == ["request 2", "request 3", "request 4"]
    web = LogReader(3, LogFilter(source="app"), last_seq=3, tail=None)
    feed(web, [requests(0, 3), dyno, requests(3, 2)])
    assert [x.message for x in web.history] == ["web says 0", "web says 1"]


def test_a_live_batch_goes_to_the_tail_line_by_line_and_overflows_line_by_line() -> None:
    tail = TailBuffer(3)
    reader = LogReader(10, LogFilter(), last_seq=0, tail=tail)
    feed(reader, [requests(0, 5)], first_seq=7)
    items = tail.take_nowait(10)
    shown = [f"gap {x.count}" if isinstance(x, Gap) else x.message for x in items]
    assert shown == ["request 0", "request 1", "request 2", "gap 2"]
    assert (items[-1].seq, items[-1].index) == (7, 4)  # a resumed tail goes on after it
