"""The output tailer and the bounded sink, without NATS."""

from __future__ import annotations

from pathlib import Path

from agent.logs import LogSink, LogTailer


def drain_queue(sink: LogSink) -> list[tuple[str, str, str]]:
    out = []
    while not sink._queue.empty():
        line = sink._queue.get_nowait()
        out.append((line.source, line.process, line.message))
    return out


async def test_tailer_emits_whole_lines_and_keeps_its_offset(tmp_path: Path) -> None:
    log, offset = tmp_path / "out.log", tmp_path / "out.offset"
    sink = LogSink(["nats://127.0.0.1:1"])
    tail = LogTailer(path=log, offset_path=offset, sink=sink, app="a", process="web.1")
    await tail.drain()  # no file yet: nothing, no error
    log.write_bytes(b"one\ntwo\nthr")
    await tail.drain()
    assert drain_queue(sink) == [("app", "web.1", "one"), ("app", "web.1", "two")]
    with log.open("ab") as fh:
        fh.write(b"ee\r\n")
    await tail.drain()
    assert drain_queue(sink) == [("app", "web.1", "three")]

    # A new tailer (agent restarted) continues at the saved offset.
    with log.open("ab") as fh:
        fh.write(b"four\nlast words")
    again = LogTailer(path=log, offset_path=offset, sink=sink, app="a", process="web.1")
    await again.drain(final=True)
    assert drain_queue(sink) == [("app", "web.1", "four"), ("app", "web.1", "last words")]


async def test_long_lines_are_split_at_10000_bytes(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    sink = LogSink(["nats://127.0.0.1:1"])
    tail = LogTailer(path=log, offset_path=tmp_path / "o", sink=sink, app="a", process="web.1")
    log.write_bytes(b"x" * 25_000 + b"\n")
    await tail.drain()
    assert [len(m) for _, _, m in drain_queue(sink)] == [10_000, 10_000, 5_000]


def test_sink_drops_and_counts_when_full() -> None:
    sink = LogSink(["nats://127.0.0.1:1"], maxsize=3)
    for i in range(5):
        sink.emit("a", "heroku", "web.1", f"line {i}")
    assert sink.dropped == 2
    assert [m for _, _, m in drain_queue(sink)] == ["line 0", "line 1", "line 2"]
