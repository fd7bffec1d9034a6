"""The agent's tailer wakes on inotify, and falls back to polling without it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import logs as agent_logs
from agent.logs import LogSink, LogTailer


async def _next_line(sink: LogSink, timeout: float) -> str:
    line = await asyncio.wait_for(sink._queue.get(), timeout)
    return line.message


async def test_tailer_wakes_on_a_write_without_waiting_for_a_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_logs, "_SAFETY_POLL", 60.0)
    log = tmp_path / "out.log"
    log.write_bytes(b"")
    sink = LogSink(["nats://127.0.0.1:1"])
    # Polls much rarer than the waits below: only inotify can deliver in time.
    tail = LogTailer(
        path=log, offset_path=tmp_path / "o", sink=sink, app="a", process="web.1", interval=60
    )
    task = asyncio.create_task(tail.run())
    try:
        # The first line may come from the tailer's first read or from inotify;
        # once it has come the tailer is watching, so the second needs inotify.
        with log.open("ab") as fh:
            fh.write(b"hello\n")
        assert await _next_line(sink, 5) == "hello"
        with log.open("ab") as fh:
            fh.write(b"again\n")
        assert await _next_line(sink, 5) == "again"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_tailer_watches_a_file_created_after_it_started(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    sink = LogSink(["nats://127.0.0.1:1"])
    tail = LogTailer(
        path=log, offset_path=tmp_path / "o", sink=sink, app="a", process="web.1", interval=0.05
    )
    task = asyncio.create_task(tail.run())
    try:
        log.write_bytes(b"first\n")  # found by the poll, then watched
        assert await _next_line(sink, 5) == "first"
        with log.open("ab") as fh:
            fh.write(b"second\n")
        assert await _next_line(sink, 5) == "second"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_tailer_polls_when_inotify_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_logs, "_watcher", lambda: None)
    log = tmp_path / "out.log"
    log.write_bytes(b"")
    sink = LogSink(["nats://127.0.0.1:1"])
    tail = LogTailer(
        path=log, offset_path=tmp_path / "o", sink=sink, app="a", process="web.1", interval=0.02
    )
    task = asyncio.create_task(tail.run())
    try:
        with log.open("ab") as fh:
            fh.write(b"polled\n")
        assert await _next_line(sink, 5) == "polled"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
