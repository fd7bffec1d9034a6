"""Logs without servers: filters, where history ends, tail-buffer drop accounting, api lines."""

from __future__ import annotations

import asyncio

import pytest

from controller.api.logs_api import responses
from controller.bus.apilog import ApiLog, release_lines, restart_line, scale_line
from controller.bus.logs import (
    DEFAULT_LINES,
    Gap,
    LogFilter,
    LogHub,
    LogReader,
    TailBuffer,
    line_count,
)
from controller.core.models import FormationItem, ReleaseRecord, SlugInfo
from slipway import errors, logline
from slipway.cli.logs import capped, render
from slipway.logline import LogLine
from slipway.v1 import platform_pb2 as pb


def line(process: str, message: str = "m", source: str = "app") -> LogLine:
    return LogLine("a", source, process, message, 1.0)


@pytest.mark.parametrize(
    ("source", "dyno", "process", "line_source", "shown"),
    [
        ("", "", "web.1", "app", True),
        ("app", "", "web.1", "app", True),
        ("app", "", "router", "heroku", False),
        ("heroku", "", "router", "heroku", True),
        ("", "web.1", "web.1", "app", True),
        ("", "web.1", "web.1", "heroku", True),  # heroku[web.1]: the dyno's state lines
        ("", "web.1", "web.12", "app", False),
        ("", "web", "web.12", "app", True),
        ("", "web", "web", "app", True),
        ("", "web", "webhook.1", "app", False),
        ("", "web", "worker.1", "app", False),
        ("", "router", "router", "heroku", True),
        ("api", "web", "web.1", "app", False),
    ],
)
def test_filter(source: str, dyno: str, process: str, line_source: str, shown: bool) -> None:
    flt = LogFilter.parse(source, dyno)
    assert flt.matches(line(process, source=line_source)) is shown


@pytest.mark.parametrize(("source", "dyno"), [("router", ""), ("", "web 1"), ("", "Web.1")])
def test_bad_filters_are_refused(source: str, dyno: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        LogFilter.parse(source, dyno)


def test_line_count() -> None:
    assert line_count(0) == DEFAULT_LINES == 100
    assert line_count(1) == 1
    assert line_count(1500) == 1500
    for bad in (-1, 1501):
        with pytest.raises(errors.InvalidArgument):
            line_count(bad)


def feed(reader: LogReader, seqs: list[int], process: str = "web.1") -> None:
    for seq in seqs:
        reader.on_message(seq, [line(process, f"#{seq}")])


def messages(items: list[LogLine | Gap]) -> list[str]:
    return [i.message if isinstance(i, LogLine) else f"gap {i.count}" for i in items]


def test_history_is_the_last_n_up_to_the_last_sequence_then_live() -> None:
    tail = TailBuffer(100)
    reader = LogReader(3, LogFilter(), last_seq=10, tail=tail)
    feed(reader, list(range(4, 11)))
    assert reader.history_done.is_set()
    assert [x.message for x in reader.history] == ["#8", "#9", "#10"]
    feed(reader, [11, 12])
    assert messages(tail.take_nowait(10)) == ["#11", "#12"]


def test_history_ends_past_a_discarded_last_sequence() -> None:
    # The line at last_seq was dropped by the per-app limit before it was read.
    tail = TailBuffer(100)
    reader = LogReader(5, LogFilter(), last_seq=10, tail=tail)
    feed(reader, [8, 9])
    assert not reader.history_done.is_set()
    feed(reader, [12])
    assert reader.history_done.is_set()
    assert [x.message for x in reader.history] == ["#8", "#9"]
    assert messages(tail.take_nowait(10)) == ["#12"]


def test_filters_apply_before_counting() -> None:
    reader = LogReader(2, LogFilter(dyno="worker"), last_seq=6, tail=None)
    feed(reader, [1, 2], process="worker.1")
    feed(reader, [3, 4, 5, 6], process="web.1")
    assert [x.message for x in reader.history] == ["#1", "#2"]


def test_no_history_means_live_at_once_and_bad_messages_only_move_on() -> None:
    tail = TailBuffer(10)
    reader = LogReader(5, LogFilter(), last_seq=0, tail=tail)
    assert reader.history_done.is_set()
    reader.on_message(1, [])  # nothing readable in it
    feed(reader, [2])
    assert messages(tail.take_nowait(10)) == ["#2"]


def test_tail_buffer_without_overflow_has_no_gap() -> None:
    buf = TailBuffer(3)
    for i in range(3):
        assert buf.offer(line("web.1", str(i)))
    assert messages(buf.take_nowait(10)) == ["0", "1", "2"]
    assert buf.dropped == 0
    assert buf.take_nowait(10) == []


def test_tail_buffer_counts_drops_and_places_the_gap_where_they_were() -> None:
    buf = TailBuffer(2)
    results = [buf.offer(line("web.1", str(i))) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert buf.dropped == 3
    assert messages(buf.take_nowait(1)) == ["0"]
    buf.offer(line("web.1", "5"))  # room again: the gap goes before it
    assert messages(buf.take_nowait(10)) == ["1", "gap 3", "5"]
    # A gap at the end comes out once the reader has taken everything before it.
    for i in range(6, 10):
        buf.offer(line("web.1", str(i)))
    assert messages(buf.take_nowait(10)) == ["6", "7", "gap 2"]
    assert buf.take_nowait(10) == []
    assert buf.dropped == 5


def test_gap_line_is_a_heroku_logs_line() -> None:
    rendered = Gap(7).line("a", 1.0).render()
    assert rendered.endswith(" heroku[logs]: 7 lines dropped (reader too slow)")


async def test_tail_buffer_take_waits_for_a_line() -> None:
    buf = TailBuffer(5)
    waiter = asyncio.create_task(buf.take(10))
    await asyncio.sleep(0)
    assert not waiter.done()
    buf.offer(line("web.1", "x"))
    assert messages(await asyncio.wait_for(waiter, 5)) == ["x"]


def release(version: int, description: str) -> ReleaseRecord:
    return ReleaseRecord("a", version, description, 0.0, {}, SlugInfo(), {})


def test_api_line_texts() -> None:
    assert release_lines(release(5, "Set A, B config vars"), "admin") == [
        "Set A, B config vars by admin",
        "Release v5 created by admin",
    ]
    assert release_lines(release(6, "Rollback to v2"), "admin")[0] == "Rollback to v2 by admin"
    formation = {
        "worker": FormationItem(1, "standard-2x"),
        "web": FormationItem(3, "standard-1x"),
    }
    assert scale_line(formation, "admin") == (
        "Scaled to web@3:standard-1x worker@1:standard-2x by admin"
    )
    assert restart_line("", "admin") == "Restart by admin"
    assert restart_line("web", "admin") == "Restart web by admin"


async def test_api_log_never_blocks_drops_and_counts_when_nats_is_away() -> None:
    api_log = ApiLog(LogHub(["nats://127.0.0.1:1"]), maxsize=3)
    api_log.emit("a", "one", "x" * 25_000)  # the long one is split into 3 pieces
    assert api_log.dropped == 1
    api_log.emit("a", "more")
    assert api_log.dropped == 2


def test_history_is_packed_into_responses_under_the_message_limit() -> None:
    lines = [LogLine("a", "app", "web.1", "z" * 10_000, 1.0) for _ in range(1500)]
    packed = responses(lines)
    assert len(packed) > 1
    assert sum(len(r.lines) for r in packed) == 1500
    assert all(r.ByteSize() < 2 * 1024 * 1024 for r in packed)
    assert responses([]) == []


def test_stream_config_bounds() -> None:
    cfg = logline.stream_config()
    assert cfg.subjects == ["logs.>"]
    assert cfg.max_msgs_per_subject == 1500
    assert cfg.max_bytes and cfg.max_bytes > 0
    assert cfg.max_age and cfg.max_age > 0
    assert logline.stream_config(max_per_app=5000, replicas=3).num_replicas == 3
    with pytest.raises(ValueError):
        logline.stream_config(max_per_app=100)


def test_cli_caps_and_renders() -> None:
    assert capped(10) == 10
    assert capped(5000) == 1500
    entry = pb.LogEntry(source="app", process="web.1", message="hi")
    entry.at.FromSeconds(0)
    assert render(entry) == "1970-01-01T00:00:00.000000+00:00 app[web.1]: hi"
