"""Follow one build's output: replay from BUILD_EVENTS, then live, then the release phase.

    builders --builds.output.{id}--> BUILD_EVENTS --ordered consumer--> builder lines
    build record (etcd) notes: "-----> Running release command: CMD"  (release.N placed)
    LOGS logs.{app}, dyno release.N --LogHub.open_read--> its output, indented
    build record notes: the outcome ("release command succeeded" / " !     Release vN failed")
    the build record itself, last

The builders' lines come from ``builds.output.{id}`` through an ordered
JetStream consumer delivering from the first message, so a late viewer (or
``builds:output ID`` on a finished build) sees everything. When to stop is
decided by the build record in etcd, not by a status message: every output line
was stored before the builder's final status, so once the record is terminal the
follower reads up to the subject's last stored sequence and moves on.

Lines the controller adds (the release phase) are the record's ``notes``. When
the release's ``release.N`` dyno ran, what it printed follows the note that
announces it: the app's log from its kept history on (so a line printed before
the follower looked is not missed), filtered to that dyno, until the phase has
settled and the dyno's exit line went by (or :data:`GRACE` passed without it).
A replay of a finished build reads the kept history only, and says so in one line
when the dyno's lines are no longer there (the log keeps an app's last 1500).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import nats.errors
import nats.js.api
import nats.js.errors

from controller.bus.buildbus import BuildBus
from controller.bus.logs import MAX_LINES, LogFilter, LogHub
from controller.store.build_records import TERMINAL, BuildRecord, BuildStore
from slipway import buildproto, errors
from slipway.aio import raise_if_cancelling
from slipway.logline import LogLine

IDLE = 0.5  # seconds without a line before the record is looked at again
RECHECK = 1.0  # the record is looked at at least this often while lines flow
# After the phase settled, how long the release dyno's last lines may still be on
# their way (its exit line, published after every output line, ends the wait sooner).
GRACE = 3.0
LIVE_BATCH = 500

INDENT = " " * 7  # build output's own indentation under a "-----> " heading
# The note controller/loops/release_phase.py (build_view) adds once release.N is placed.
RUNNING_NOTE = "-----> Running release command"
# The agent's lines for the dyno (agent/dyno.py): the first of each run, and the
# last ones of a run, published after all of its output.
_STARTING = "Starting process with command"
_ENDED = ("Process exited with status", "Error launching process")


@dataclass(frozen=True)
class Line:
    text: str
    attempt: int
    ts: float


def running_note_end(notes: list[str]) -> int | None:
    """The index just past the note announcing the release dyno, None without one (pure)."""
    for i, note in enumerate(notes):
        if note.startswith(RUNNING_NOTE):
            return i + 1
    return None


class Notes:
    """Which of the record's notes went out already (pure)."""

    def __init__(self) -> None:
        self.sent = 0

    def take(self, record: BuildRecord, upto: int | None = None) -> list[Line]:
        """The notes not yet sent, up to index ``upto`` (all by default)."""
        end = len(record.notes) if upto is None else min(upto, len(record.notes))
        new = record.notes[self.sent : end]
        self.sent = max(self.sent, end)
        return [Line(note, record.attempts, record.finished_at) for note in new]


class ReleaseLines:
    """What the build output shows of the release dyno's log lines (pure).

    Its own output (``app[release.N]``) indented as build output is; of its
    platform lines (``heroku[release.N]``) only errors, since the outcome note
    says how it exited; a slow reader's gap as the note the log reader placed.
    ``ended`` once its exit line went by: the agent publishes that after the
    run's last output line, on the same ordered path.
    """

    def __init__(self, dyno: str) -> None:
        self.dyno = dyno
        self.seen = 0
        self.ended = False

    def feed(self, lines: Iterable[LogLine]) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        for line in lines:
            if line.source == "heroku" and line.process == "logs":  # a gap (bus/logs.py Gap)
                out.append((line.ts, f" !     {line.message}"))
                continue
            if line.process != self.dyno:
                continue
            if not self.seen and not (line.source == "heroku" and _STARTING in line.message):
                out.append((line.ts, f"{INDENT}(earlier lines of {self.dyno} have left the log)"))
            self.seen += 1
            if line.source == "app":
                out.append((line.ts, INDENT + line.message))
            elif line.source == "heroku":
                if line.message.startswith(_ENDED):
                    self.ended = True
                if line.message.startswith("Error"):
                    out.append((line.ts, f" !     {line.message}"))
        return out

    def closing(self, replay: bool) -> list[str]:
        """The line that says the dyno's output is missing, when it is."""
        if self.seen:
            return []
        if replay:
            return [
                f"{INDENT}({self.dyno}'s output is no longer in the app's log, "
                f"which keeps its last {MAX_LINES} lines)"
            ]
        return [f"{INDENT}(no output of {self.dyno} reached the app's log)"]


async def _last_seq(bus: BuildBus, subject: str) -> int:
    try:
        msg = await bus.js.get_last_msg(buildproto.EVENTS_STREAM, subject)
    except nats.js.errors.NotFoundError:
        return 0
    return int(msg.seq or 0)


async def _builder_lines(
    store: BuildStore, bus: BuildBus, app: str, build_id: str
) -> AsyncIterator[Line]:
    """The builders' lines, until the build itself is terminal and all are read."""
    subject = buildproto.output_subject(build_id)
    sub = await bus.js.subscribe(
        subject,
        stream=buildproto.EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=nats.js.api.DeliverPolicy.ALL,
    )
    loop = asyncio.get_running_loop()
    seen_seq = 0
    last_check = loop.time()
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=IDLE)
            except nats.errors.TimeoutError:
                msg = None
            raise_if_cancelling()
            if msg is not None:
                seen_seq = max(seen_seq, int(msg.metadata.sequence.stream))
                try:
                    out = buildproto.OutputLine.decode(msg.data)
                except (ValueError, KeyError, TypeError):
                    continue
                yield Line(out.line, out.attempt, out.ts)
                if loop.time() - last_check < RECHECK:
                    continue
            last_check = loop.time()
            record = await store.get(app, build_id)
            if record.status in TERMINAL and seen_seq >= await _last_seq(bus, subject):
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _release_dyno(
    store: BuildStore, logs: LogHub, record: BuildRecord, replay: bool
) -> AsyncIterator[Line]:
    """The release dyno's lines, until its phase settled and they are read."""
    shown = ReleaseLines(f"release.{record.release}")
    attempt = record.attempts
    loop = asyncio.get_running_loop()
    try:
        async with logs.open_read(
            record.app, MAX_LINES, LogFilter(dyno=shown.dyno), tail=not replay
        ) as opened:
            batch = await opened.history()
            settled_at: float | None = None
            last_check = loop.time()
            while True:
                for ts, text in shown.feed(batch):
                    yield Line(text, attempt, ts)
                if replay:
                    break
                now = loop.time()
                if not batch or now - last_check >= RECHECK:
                    last_check = now
                    record = await store.get(record.app, record.id)
                    if record.finished and settled_at is None:
                        settled_at = now
                if settled_at is not None and (shown.ended or now - settled_at >= GRACE):
                    break
                batch = await opened.live(LIVE_BATCH, timeout=IDLE)
    except (errors.SlipwayError, nats.errors.Error) as exc:
        yield Line(f"{INDENT}(the release command's output cannot be read: {exc})", attempt, 0.0)
        return
    for text in shown.closing(replay):
        yield Line(text, attempt, record.finished_at)


async def follow(
    store: BuildStore,
    bus: BuildBus,
    app: str,
    build_id: str,
    logs: LogHub | None = None,
) -> AsyncIterator[Line | BuildRecord]:
    """The build's lines, the release phase's notes (with the release dyno's
    output when ``logs`` is given), then the finished build record."""
    replay = (await store.get(app, build_id)).finished
    async for line in _builder_lines(store, bus, app, build_id):
        yield line
    notes = Notes()
    dyno_shown = logs is None
    while True:
        record = await store.get(app, build_id)
        cut = None if dyno_shown else running_note_end(record.notes)
        for note in notes.take(record, cut):
            yield note
        if logs is not None and cut is not None:
            async for line in _release_dyno(store, logs, record, replay):
                yield line
            dyno_shown = True
            continue
        if record.finished:
            break
        await asyncio.sleep(IDLE)
    yield record
