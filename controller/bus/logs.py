"""Reading an app's log from the LOGS stream: recent history, then live lines.

    producers --core NATS logs.{app}--> JetStream LOGS (bounded per app)
        --ordered ephemeral consumer (deliver all of logs.{app})--> LogReader
            (each message a batch of lines: logline.decode_batch)
            history: seq <= last seq at start -> deque(maxlen=N) of matching lines
            live:    seq >  last seq at start -> TailBuffer (bounded) -> gRPC stream

Every line carries its cursor: its message's stream sequence, the same on every
controller, and its index in that message. A client whose controller died
resumes on another with ``after_seq`` and ``after_index``: the consumer then
starts at that message, whose later lines come first, and every kept line after
the cursor is history (``num`` is ignored).

The stream keeps at most ``max_per_app`` messages per app and origin, so
replaying an app's whole subject to find its last N matching lines is bounded
work; ``num`` counts lines, whatever messages held them, and filters apply
before counting (``-n 10 --dyno web.1`` shows web.1's last ten lines).

:meth:`LogHub.read` is an iterator of batches for StreamLogs; :meth:`LogHub.open_read`
is the same read as an :class:`OpenLog` its owner pulls with a timeout (the build
output follower reads a release dyno's lines that way, between its own checks).

A tail reader that cannot keep up never slows anyone: the NATS callback only
appends to the reader's own :class:`TailBuffer`; past its bound, lines are
dropped and counted, and the reader is told with a ``heroku[logs]`` line placed
where the gap is.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import nats.js.api
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from slipway import errors, logline
from slipway import log as slog
from slipway.aio import wait_set
from slipway.clock import Clock, SystemClock
from slipway.logline import LogLine
from slipway.natslink import NatsLink
from slipway.pki import Bundle

log = slog.get("controller.logs")

DEFAULT_LINES = 100
MAX_LINES = logline.MAX_LINES_PER_APP
DEFAULT_TAIL_BUFFER = 2000
_DYNO_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[0-9]+)?$")


@dataclass(frozen=True)
class LogFilter:
    """Which lines a reader wants; empty fields match everything."""

    source: str = ""
    dyno: str = ""  # "web.1" exactly, or a process type: "web" matches web.1, web.2, ...

    @classmethod
    def parse(cls, source: str, dyno: str) -> LogFilter:
        if source and source not in logline.SOURCES:
            raise errors.InvalidArgument(
                f"unknown log source {source!r}; use one of: {', '.join(logline.SOURCES)}"
            )
        if dyno and not _DYNO_RE.match(dyno):
            raise errors.InvalidArgument(
                f"bad dyno filter {dyno!r}: give a dyno (web.1) or a process type (web)"
            )
        return cls(source, dyno)

    def matches(self, line: LogLine) -> bool:
        if self.source and line.source != self.source:
            return False
        if not self.dyno:
            return True
        if "." in self.dyno:
            return line.process == self.dyno
        return line.process == self.dyno or line.process.startswith(self.dyno + ".")


def line_count(num: int) -> int:
    """The request's ``num``: 0 means the default; above the kept history is refused."""
    if num < 0:
        raise errors.InvalidArgument("the number of lines cannot be negative")
    if num > MAX_LINES:
        raise errors.InvalidArgument(
            f"at most {MAX_LINES} lines are kept per app; ask for {MAX_LINES} or fewer"
        )
    return num or DEFAULT_LINES


@dataclass(frozen=True)
class Gap:
    """Lines dropped for a slow reader at this point of its stream."""

    count: int
    # The last dropped line's cursor: a stream resumed after this note goes on past
    # the lines it reports, so they are neither shown late nor counted twice.
    seq: int = 0
    index: int = 0

    def line(self, app: str, now: float) -> LogLine:
        text = f"{self.count} lines dropped (reader too slow)"
        return LogLine(app, "heroku", "logs", text, now, self.seq, self.index)


class TailBuffer:
    """A bounded FIFO of live lines for one reader; overflow is dropped, counted, placed."""

    def __init__(self, limit: int = DEFAULT_TAIL_BUFFER) -> None:
        self.limit = max(1, limit)
        self._items: deque[LogLine | Gap] = deque()
        self._lines = 0
        self._gap = 0  # dropped since the last queued line
        self._gap_at = (0, 0)  # the cursor of the last of them
        self.dropped = 0
        self._ready = asyncio.Event()

    def offer(self, line: LogLine) -> bool:
        """Queue ``line``; False (and counted) when the reader is ``limit`` lines behind."""
        if self._lines >= self.limit:
            self._gap += 1
            self._gap_at = (line.seq, line.index)
            self.dropped += 1
            return False
        if self._gap:
            self._items.append(Gap(self._gap, *self._gap_at))
            self._gap = 0
        self._items.append(line)
        self._lines += 1
        self._ready.set()
        return True

    def take_nowait(self, most: int) -> list[LogLine | Gap]:
        """Up to ``most`` items in order; a trailing gap comes out once the lines are gone."""
        out: list[LogLine | Gap] = []
        while self._items and len(out) < most:
            item = self._items.popleft()
            if isinstance(item, LogLine):
                self._lines -= 1
            out.append(item)
        if not self._items and self._gap and len(out) < most:
            out.append(Gap(self._gap, *self._gap_at))
            self._gap = 0
        return out

    async def take(self, most: int) -> list[LogLine | Gap]:
        while True:
            items = self.take_nowait(most)
            if items:
                return items
            self._ready.clear()
            await self._ready.wait()


class LogReader:
    """Routes an app's stream messages: history up to ``last_seq``, live lines after it.

    ``last_seq`` is the app subject's last stream sequence when the read began (0:
    no history). The consumer delivers in sequence order, so the history is complete
    at the first message at or past ``last_seq``; the message at ``last_seq`` itself
    may already be gone (discarded by the per-app limit), hence "at or past".

    A resumed stream (``after_seq``) makes every line after the cursor
    ``(after_seq, after_index)`` history, not just the last ``num``: the client has
    seen the lines up to it and none after. The kept history bounds that list as it
    bounds the replay (in messages: batches make it longer in lines).
    """

    def __init__(
        self,
        num: int,
        flt: LogFilter,
        last_seq: int,
        tail: TailBuffer | None,
        after_seq: int = 0,
        after_index: int = 0,
    ) -> None:
        self.filter = flt
        self.last_seq = last_seq
        self.after = (after_seq, after_index) if after_seq else (0, 0)
        self.history: deque[LogLine] = deque(maxlen=None if after_seq else num)
        self.tail = tail
        self.history_done = asyncio.Event()
        # At last_seq == after_seq the message may hold lines past after_index: its
        # delivery (the consumer's first) ends the history then.
        if last_seq < after_seq or not last_seq:
            self.history_done.set()

    def on_message(self, seq: int, lines: Sequence[LogLine]) -> None:
        """``lines`` are a message's readable lines (:func:`logline.decode_batch`);
        a message without any still moves the position."""
        if seq < self.after[0]:
            return  # the client has it already (the consumer starts at after_seq anyway)
        # The client has the resume message's lines up to after_index.
        fresh = [replace(line, seq=seq) for line in lines if (seq, line.index) > self.after]
        if not self.history_done.is_set():
            if seq <= self.last_seq:
                self.history.extend(line for line in fresh if self.filter.matches(line))
                if seq == self.last_seq:
                    self.history_done.set()
                return
            self.history_done.set()
        if self.tail is not None:
            for line in fresh:
                if self.filter.matches(line):
                    self.tail.offer(line)


async def _history_end(reader: LogReader, sub: object, check_every: float = 1.0) -> None:
    """Wait until the history is read; also ends when nothing is left to deliver
    (every stored line of the app was discarded after ``last_seq`` was looked up)."""
    while True:
        try:
            await wait_set(reader.history_done, check_every)
            return
        except TimeoutError:
            info = await sub.consumer_info()  # type: ignore[attr-defined]
            if not info.num_pending:
                reader.history_done.set()


def consumer_config(after_seq: int) -> nats.js.api.ConsumerConfig:
    """Where a reader's consumer starts: the app's first kept message, or the message
    ``after_seq``, whose lines past the resume index the client has not seen
    (JetStream starts at the oldest kept message when that one is gone)."""
    if not after_seq:
        return nats.js.api.ConsumerConfig(deliver_policy=nats.js.api.DeliverPolicy.ALL)
    return nats.js.api.ConsumerConfig(
        deliver_policy=nats.js.api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq
    )


@dataclass
class OpenLog:
    """An open read of one app's log (:meth:`LogHub.open_read`), pulled by its owner."""

    app: str
    reader: LogReader
    sub: object  # the JetStream subscription feeding ``reader``
    buffer: TailBuffer | None
    clock: Clock = field(default_factory=SystemClock)  # stamps the gap lines

    async def history(self) -> list[LogLine]:
        """The kept lines the read began with (once; later calls return [])."""
        await _history_end(self.reader, self.sub)
        lines = list(self.reader.history)
        self.reader.history.clear()
        return lines

    async def live(self, most: int, timeout: float | None = None) -> list[LogLine]:
        """Up to ``most`` live lines, a gap as its ``heroku[logs]`` line; [] once
        ``timeout`` passed without any (or when the read does not tail)."""
        if self.buffer is None:
            return []
        try:
            # asyncio.timeout, not wait_for: callers pull in a loop, and 3.11's
            # wait_for can swallow a cancellation (see slipway.aio.wait_set).
            async with asyncio.timeout(timeout):
                items = await self.buffer.take(most)
        except TimeoutError:
            return []
        return [
            item.line(self.app, self.clock.now()) if isinstance(item, Gap) else item
            for item in items
        ]


class LogHub:
    """The controller's own NATS connection for logs (kept apart from build traffic)."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        replicas: int = 1,
        max_per_app: int = logline.MAX_LINES_PER_APP,
        max_bytes: int = logline.STREAM_MAX_BYTES,
        max_age: float = logline.STREAM_MAX_AGE,
        tail_buffer: int = DEFAULT_TAIL_BUFFER,
        clock: Clock = SystemClock(),
        credentials: Bundle | None = None,
    ) -> None:
        self.clock = clock
        self.servers = list(servers)
        self.replicas = replicas
        self.max_per_app = max_per_app
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.tail_buffer = tail_buffer
        self.link = NatsLink(
            servers,
            name="slipway-controller-logs",
            purpose="logs",
            setup=self._setup,
            credentials=credentials,
        )
        self.connected = self.link.connected

    @property
    def nc(self) -> NATS:
        return self.link.nc

    async def _setup(self, nc: NATS) -> None:
        await logline.ensure_stream(
            nc.jetstream(),
            self.replicas,
            max_per_app=self.max_per_app,
            max_bytes=self.max_bytes,
            max_age=self.max_age,
        )
        log.info("logs stream ready", stream=logline.STREAM, max_per_app=self.max_per_app)

    async def run(self) -> None:
        """Connect and create LOGS (retrying), then hold the connection until cancelled."""
        await self.link.run()

    async def last_seq(self, app: str) -> int:
        try:
            msg = await self.nc.jetstream().get_last_msg(logline.STREAM, logline.app_filter(app))
        except nats.js.errors.NotFoundError:
            return 0
        return int(msg.seq or 0)

    @contextlib.asynccontextmanager
    async def open_read(
        self,
        app: str,
        num: int,
        flt: LogFilter,
        *,
        tail: bool,
        after_seq: int = 0,
        after_index: int = 0,
    ) -> AsyncIterator[OpenLog]:
        """One read of the app's log, open until the block ends: the last ``num``
        matching lines (with ``after_seq``: all those after line ``after_index`` of
        that message), then with ``tail`` live lines, each pulled when the caller
        wants them (see :class:`OpenLog`)."""
        js = self.nc.jetstream()
        last_seq = await self.last_seq(app)
        buffer = TailBuffer(self.tail_buffer) if tail else None
        reader = LogReader(num, flt, last_seq, buffer, after_seq, after_index)

        async def on_msg(msg: Msg) -> None:
            # Runs in the subscription's task: must stay quick and never wait.
            lines = logline.decode_batch(msg.data, msg.subject)
            reader.on_message(int(msg.metadata.sequence.stream), lines)

        sub = await js.subscribe(
            logline.app_filter(app),
            stream=logline.STREAM,
            ordered_consumer=True,
            config=consumer_config(after_seq),
            cb=on_msg,
        )
        try:
            yield OpenLog(app, reader, sub, buffer, self.clock)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), 2.0)
            if buffer is not None and buffer.dropped:
                log.info("tail reader dropped lines", app=app, count=buffer.dropped)

    async def read(
        self,
        app: str,
        num: int,
        flt: LogFilter,
        *,
        tail: bool,
        after_seq: int = 0,
        after_index: int = 0,
        batch: int = 500,
    ) -> AsyncIterator[list[LogLine]]:
        """The last ``num`` matching lines (with ``after_seq``: all those after the
        cursor) in one batch, then with ``tail`` live batches. Lines carry their
        ``seq`` and ``index``."""
        async with self.open_read(
            app, num, flt, tail=tail, after_seq=after_seq, after_index=after_index
        ) as opened:
            history = await opened.history()
            if history or not tail:
                yield history
            if not tail:
                return
            while True:
                yield await opened.live(batch)
