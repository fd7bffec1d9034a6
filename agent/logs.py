"""Dyno output and dyno-manager events into the app's log stream on NATS.

    container stdout/stderr --append--> DATA/dynos/{key}/out.log
        LogTailer (offset in out.offset) --> LogSink (bounded queue) --> NATS logs.{app}
    dyno manager events (heroku[web.1]) ----------^

Nothing here can block a dyno: the container writes to a file, never to a pipe
the agent must drain, and the sink drops (and counts) lines when its queue is
full because NATS is away. The file is followed with inotify (through ctypes:
one descriptor per event loop, a watch per dyno file), so a printed line is
read within milliseconds, not at the next poll; a slow safety poll covers a
missed or lost watch, and plain polling every ``interval`` is the fallback where
inotify is unavailable (or its watch limit is reached). Consumed bytes are
released with FALLOC_FL_PUNCH_HOLE so the file's disk use stays small while its
offsets stay valid, which keeps the adoption story simple: a new agent
continues at the saved offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import os
import struct
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from slipway import log, objstore
from slipway.backoff import Backoff
from slipway.logline import MAX_LINE_BYTES, LogLine, Origin, split_message, subject
from slipway.pki import Bundle

logger = log.get("agent.logs")

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_PUNCH_EVERY = 1024 * 1024
_READ_CHUNK = 256 * 1024

_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004  # truncation by someone else
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_IGNORED = 0x8000  # the kernel dropped the watch (file gone)
_WATCH_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_DELETE_SELF | _IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (+ name)
# With a watch, still look at the file this often in case an event was missed.
_SAFETY_POLL = 1.0
# A dyno printing thousands of lines a second wakes its tailer per write; reading
# at most every few ms batches those writes at a negligible cost in latency.
_MIN_GAP = 0.003


class LogSink:
    """A bounded queue of log lines and the task that publishes them."""

    def __init__(
        self, servers: Sequence[str], *, maxsize: int = 10_000, credentials: Bundle | None = None
    ) -> None:
        self._servers = list(servers)
        self._credentials = credentials
        self._queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.published = 0
        self._last_drop_report = 0.0

    def emit(self, app: str, source: str, process: str, message: str) -> None:
        """Queue one line (split at 10,000 bytes); never blocks, drops when full."""
        now = time.time()
        for piece in split_message(message):
            try:
                self._queue.put_nowait(LogLine(app, source, process, piece, now))
            except asyncio.QueueFull:
                self.dropped += 1
        if self.dropped and now - self._last_drop_report > 10:
            self._last_drop_report = now
            logger.warning("log lines dropped", count=self.dropped)

    async def run(self) -> None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        while True:
            try:
                nc = await objstore.connect(
                    self._servers,
                    name="slipway-agent-logs",
                    credentials=self._credentials,
                    error_cb=nats_error,
                )
            except Exception as exc:
                logger.warning("nats unreachable", error=str(exc))
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            try:
                await self._publish_loop(nc)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 2)

    async def _publish_loop(self, nc: object) -> None:
        while True:
            line = await self._queue.get()
            try:
                # While disconnected nats-py buffers up to its pending limit and
                # then raises: count the loss, never wait for the bus.
                await nc.publish(subject(line.app, Origin.NODE), line.encode())  # type: ignore[attr-defined]
                self.published += 1
            except Exception:
                self.dropped += 1


async def nats_error(exc: Exception) -> None:
    """nats-py prints a traceback per failed attempt by default; one line will do."""
    logger.warning("nats error", error=str(exc) or type(exc).__name__)


def _punch_hole(fd: int, length: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    fallocate = libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    return bool(fallocate(fd, mode, 0, length) == 0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


class _Inotify:
    """One inotify descriptor per event loop; a tailer's Event is set when its file changes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = _libc()
        if libc is None:
            raise OSError("no libc")
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._libc = libc
        self._fd = fd
        self._waiters: dict[int, set[asyncio.Event]] = {}
        # The loop (through its reader) owns this object, never the reverse.
        loop.add_reader(fd, self._on_readable)
        weakref.finalize(loop, os.close, fd)

    def watch(self, path: Path, event: asyncio.Event) -> int | None:
        wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), _WATCH_MASK))
        if wd < 0:
            return None  # no file yet, or the watch limit: the tailer polls
        self._waiters.setdefault(wd, set()).add(event)
        return wd

    def watching(self, wd: int) -> bool:
        return wd in self._waiters

    def unwatch(self, wd: int, event: asyncio.Event) -> None:
        waiters = self._waiters.get(wd)
        if waiters is None:
            return
        waiters.discard(event)
        if not waiters:
            del self._waiters[wd]
            self._libc.inotify_rm_watch(self._fd, wd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except OSError:
            return
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size + length
            for event in self._waiters.get(wd, ()):
                event.set()
            if mask & _IN_IGNORED:
                self._waiters.pop(wd, None)  # tailers see it gone and watch again


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inotify | None] = (
    weakref.WeakKeyDictionary()
)


def _watcher() -> _Inotify | None:
    """This loop's inotify watcher; None where inotify cannot be used."""
    loop = asyncio.get_running_loop()
    if loop not in _watchers:
        try:
            _watchers[loop] = _Inotify(loop)
        except (OSError, AttributeError, NotImplementedError) as exc:
            logger.warning("inotify unavailable, polling dyno logs", error=str(exc))
            _watchers[loop] = None
    return _watchers[loop]


class LogTailer:
    """Follows one dyno's out.log from a saved offset and emits its lines."""

    def __init__(
        self,
        *,
        path: Path,
        offset_path: Path,
        sink: LogSink,
        app: str,
        process: str,
        interval: float = 0.1,
    ) -> None:
        self.path = path
        self.offset_path = offset_path
        self.sink = sink
        self.app = app
        self.process = process
        self.interval = interval
        self._offset = self._load_offset()
        self._punched = 0
        self._lock = asyncio.Lock()

    def _load_offset(self) -> int:
        try:
            return int(self.offset_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _save_offset(self) -> None:
        tmp = self.offset_path.with_name(self.offset_path.name + ".tmp")
        tmp.write_text(str(self._offset))
        os.replace(tmp, self.offset_path)

    async def run(self) -> None:
        watcher = _watcher()
        wake = asyncio.Event()
        wd: int | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                if watcher is not None and (wd is None or not watcher.watching(wd)):
                    wd = watcher.watch(self.path, wake)
                # Cleared before reading: a write during the read wakes us again.
                wake.clear()
                started = loop.time()
                await self.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_SAFETY_POLL if wd is not None else self.interval):
                        await wake.wait()
                rest = _MIN_GAP - (loop.time() - started)
                if rest > 0:
                    await asyncio.sleep(rest)
        finally:
            if watcher is not None and wd is not None:
                watcher.unwatch(wd, wake)

    async def drain(self, *, final: bool = False) -> None:
        """Publish everything written so far; ``final`` flushes a trailing partial line."""
        async with self._lock:
            self._read(final=final)

    def _read(self, *, final: bool) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            before = self._offset
            if size < self._offset:
                self._offset = 0  # truncated by someone: start over
            while self._offset < size:
                data = os.pread(fd, min(_READ_CHUNK, size - self._offset), self._offset)
                if not data:
                    break
                consumed = self._emit_lines(data, final=final and self._offset + len(data) >= size)
                if consumed == 0:
                    break  # only a partial line so far
                self._offset += consumed
            if self._offset != before:
                self._save_offset()
            if self._offset - self._punched >= _PUNCH_EVERY:
                # Release whole consumed blocks; the size (and offsets) stay.
                if _punch_hole(fd, self._offset):
                    self._punched = self._offset
        finally:
            os.close(fd)

    def _emit_lines(self, data: bytes, *, final: bool) -> int:
        consumed = 0
        while consumed < len(data):
            nl = data.find(b"\n", consumed)
            if nl < 0:
                rest = len(data) - consumed
                if final or rest >= MAX_LINE_BYTES:
                    # An over-long line without newline yet, or the last words
                    # of an exited process: publish what there is.
                    self._emit(data[consumed:])
                    consumed = len(data)
                break
            self._emit(data[consumed:nl])
            consumed = nl + 1
        return consumed

    def _emit(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self.sink.emit(self.app, "app", self.process, text)
