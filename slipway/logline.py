"""Log lines as they travel over NATS, and their Heroku text form.

Every producer (agents for dyno output and dyno-manager events, routers for
request lines, the controller for api events, builders for build events)
publishes on ``logs.{app}.{origin}``, the origin being the kind of component
that published it (``router``, ``node``, ``builder``, ``controller``). A
JetStream stream (``LOGS``, bounded per subject: per app and origin, counted in
messages) keeps each app's recent history; readers take ``logs.{app}.>``.

A message is a batch of one or more lines: each line the JSON object
:meth:`LogLine.encode` makes (which never holds a raw newline), joined by single
newline bytes (JSON Lines), one trailing newline allowed. Most producers send
batches of one (:func:`encode_batch` makes any batch, :func:`decode_batch` reads);
the router sends one message per app per short interval. A line's place in the
log is its cursor ``(seq, index)``: the message's stream sequence and the line's
0-based position in it (:func:`decode_batch`). A malformed or untrusted line is
skipped and keeps its position, so the other lines' cursors do not move.

With TLS each kind of component may publish on its own origin only (see
:mod:`slipway.natsauth`), and readers drop a line whose origin could not have
written it (:func:`trusted`): a builder cannot forge a router line, nor a node
an api line.

Text form: ``2026-11-21T12:00:00.123456+00:00 app[web.1]: message``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

import nats.js.api
import nats.js.errors
from nats.js import JetStreamContext

from slipway import streams

MAX_LINE_BYTES = 10_000
STREAM = "LOGS"
SUBJECT_PREFIX = "logs"
SOURCES = ("app", "heroku", "api")
# History kept per app (Heroku keeps 1500 lines); `logs -n` shows at most this many.
# The stream counts messages, so a batching producer's subject keeps more lines.
MAX_LINES_PER_APP = 1500
# Whole-stream bounds, so many apps (or huge lines) cannot fill the disk either.
STREAM_MAX_BYTES = 1024 * 1024 * 1024
STREAM_MAX_AGE = 7 * 24 * 3600.0


class Origin(StrEnum):
    """Who published a line: the last token of its subject."""

    CONTROLLER = "controller"
    NODE = "node"
    ROUTER = "router"
    BUILDER = "builder"


def subject(app: str, origin: Origin) -> str:
    """Where ``origin`` publishes ``app``'s lines."""
    return f"{SUBJECT_PREFIX}.{app}.{origin.value}"


def app_filter(app: str) -> str:
    """Every line of ``app``, whoever published it (consumers' filter)."""
    return f"{SUBJECT_PREFIX}.{app}.>"


def publish_filter(origin: Origin) -> str:
    """The subjects ``origin`` may publish on, for every app (a NATS permission)."""
    return f"{SUBJECT_PREFIX}.*.{origin.value}"


def origin_of(subject_: str) -> Origin | None:
    """The origin of a message's subject, or None for a subject no origin names."""
    parts = subject_.split(".")
    if len(parts) != 3 or parts[0] != SUBJECT_PREFIX:
        return None
    try:
        return Origin(parts[2])
    except ValueError:
        return None


def trusted(origin: Origin | None, source: str, process: str) -> bool:
    """Could ``origin`` have written a ``source[process]`` line? The controller writes
    anything (api lines, drains' errors); the router only ``heroku[router]``; a builder
    only ``api[build]``; a node its dynos' output and their dyno-manager lines."""
    if origin is Origin.CONTROLLER:
        return True
    if origin is Origin.ROUTER:
        return source == "heroku" and process == "router"
    if origin is Origin.BUILDER:
        return source == "api" and process == "build"
    if origin is Origin.NODE:
        return source in ("app", "heroku") and process not in ("router", "api", "build")
    return False


@dataclass(frozen=True)
class LogLine:
    app: str
    source: str  # app | heroku | api
    process: str  # web.1, router, api, build
    message: str
    ts: float = 0.0
    # The LOGS stream sequence, known once read back from the stream (0 before); not
    # part of the encoded form, which the stream itself numbers.
    seq: int = 0
    # The line's position within its message (see decode_batch); not encoded either.
    index: int = 0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "ts": self.ts or time.time(),
                "source": self.source,
                "process": self.process,
                "message": self.message,
                "app": self.app,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes, subject: str | None = None) -> LogLine:
        """With ``subject`` (the message's), a line its origin could not have
        written raises ValueError, like a malformed one."""
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("a log line is a JSON object")
        line = cls(
            app=str(obj.get("app", "")),
            source=str(obj["source"]),
            process=str(obj["process"]),
            message=str(obj["message"]),
            ts=float(obj["ts"]),
        )
        if subject is not None and not trusted(origin_of(subject), line.source, line.process):
            raise ValueError(f"a {line.source}[{line.process}] line cannot come from {subject}")
        return line

    def render(self) -> str:
        from datetime import UTC, datetime

        stamp = datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="microseconds")
        return f"{stamp} {self.source}[{self.process}]: {self.message}"


def encode_batch(lines: Iterable[LogLine]) -> bytes:
    """One message holding ``lines`` in order (see the module docstring)."""
    encoded = [line.encode() for line in lines]
    if not encoded:
        raise ValueError("a log message holds at least one line")
    return b"\n".join(encoded)


def decode_batch(data: bytes, subject: str | None = None) -> list[LogLine]:
    """The readable lines of one message, in order, each with its ``index``; with
    ``subject``, lines its origin could not have written are skipped too."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # the trailing newline ends the last line, it starts none
    lines = []
    for index, piece in enumerate(pieces):
        try:
            line = LogLine.decode(piece, subject)
        except (ValueError, KeyError, TypeError):
            continue
        lines.append(replace(line, index=index))
    return lines


def split_message(message: str, limit: int = MAX_LINE_BYTES) -> list[str]:
    """Split an over-long line into pieces of at most ``limit`` bytes (UTF-8 safe)."""
    raw = message.encode()
    if len(raw) <= limit:
        return [message]
    pieces = []
    start = 0
    while start < len(raw):
        end = min(start + limit, len(raw))
        # do not cut inside a multi-byte character
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(raw[start:end].decode())
        start = end
    return pieces


def stream_config(
    *,
    replicas: int = 1,
    max_per_app: int = MAX_LINES_PER_APP,
    max_bytes: int = STREAM_MAX_BYTES,
    max_age: float = STREAM_MAX_AGE,
) -> nats.js.api.StreamConfig:
    """LOGS: every ``logs.{app}``, the oldest lines of an app discarded past ``max_per_app``."""
    if max_per_app < MAX_LINES_PER_APP:
        raise ValueError(f"max_per_app must be at least {MAX_LINES_PER_APP} (`logs -n` maximum)")
    return nats.js.api.StreamConfig(
        name=STREAM,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        retention=nats.js.api.RetentionPolicy.LIMITS,
        storage=nats.js.api.StorageType.FILE,
        discard=nats.js.api.DiscardPolicy.OLD,
        max_msgs_per_subject=max_per_app,
        max_bytes=max_bytes,
        max_age=max_age,
        num_replicas=replicas,
    )


async def ensure_stream(
    js: JetStreamContext,
    replicas: int = 1,
    *,
    max_per_app: int = MAX_LINES_PER_APP,
    max_bytes: int = STREAM_MAX_BYTES,
    max_age: float = STREAM_MAX_AGE,
) -> None:
    """Create LOGS, or bring its limits to these values and its replicas up to ``replicas``
    (idempotent; any component may call it)."""
    wanted = stream_config(
        replicas=replicas, max_per_app=max_per_app, max_bytes=max_bytes, max_age=max_age
    )

    def outdated(have: nats.js.api.StreamConfig) -> bool:
        # Limits are operator settings: the latest controller to start applies them.
        return (
            have.max_msgs_per_subject != wanted.max_msgs_per_subject
            or have.max_bytes != wanted.max_bytes
            or int(have.max_age or 0) != int(wanted.max_age or 0)
            or list(have.subjects or []) != wanted.subjects
        )

    await streams.ensure(js, wanted, outdated=outdated)
