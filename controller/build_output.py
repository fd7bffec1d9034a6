"""Follow one build's output: replay from BUILD_EVENTS, then live, then the outcome.

The builders' lines come from ``builds.output.{id}`` through an ordered
JetStream consumer delivering from the first message, so a late viewer (or
``builds:output ID`` on a finished build) sees everything. When to stop is
decided by the build record in etcd, not by a status message: the record only
turns terminal after the leader applied the builder's final status (and, for a
release command, the release phase), and every output line was stored before
that status. To be sure none is missed, the follower reads up to the subject's
last stored sequence before it ends. Lines the controller adds (the release
phase) are the record's ``notes``, sent as they appear.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats.errors
import nats.js.api
import nats.js.errors

from controller.build_records import BuildRecord, BuildStore
from controller.buildbus import BuildBus
from slipway import buildproto

IDLE = 0.5  # seconds without a line before the record is looked at again
RECHECK = 1.0  # the record is looked at at least this often while lines flow


@dataclass(frozen=True)
class Line:
    text: str
    attempt: int
    ts: float


async def _last_seq(bus: BuildBus, subject: str) -> int:
    try:
        msg = await bus.js.get_last_msg(buildproto.EVENTS_STREAM, subject)
    except nats.js.errors.NotFoundError:
        return 0
    return int(msg.seq or 0)


async def follow(
    store: BuildStore, bus: BuildBus, app: str, build_id: str
) -> AsyncIterator[Line | BuildRecord]:
    record = await store.get(app, build_id)
    subject = buildproto.output_subject(build_id)
    sub = await bus.js.subscribe(
        subject,
        stream=buildproto.EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=nats.js.api.DeliverPolicy.ALL,
    )
    loop = asyncio.get_running_loop()
    seen_seq = 0
    notes_sent = 0
    last_check = loop.time()
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=IDLE)
            except nats.errors.TimeoutError:
                msg = None
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
            for note in record.notes[notes_sent:]:
                yield Line(note, record.attempts, record.finished_at)
            notes_sent = len(record.notes)
            if record.status == "failed" or record.finished:
                if seen_seq >= await _last_seq(bus, subject):
                    break
        yield record
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
