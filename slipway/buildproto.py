"""The build wire format on NATS, shared by the controller and the builders.

    stream BUILDS        work-queue retention, subject builds.jobs
      consumer builders  durable pull, explicit ack, ack_wait 30 s, max_deliver 3
    stream BUILD_EVENTS  limits retention (7 days), subjects builds.output.* and
                         builds.status.*: live for core subscribers, replayable
                         later (``builds:output ID``, a controller that restarted)

    builds.jobs                 BuildJob JSON (published by the controller)
    builds.output.{build_id}    {"seq", "line", "ts", "attempt"} one per output line
    builds.status.{build_id}    BuildStatus JSON: running | succeeded | failed

``seq`` starts at 1 for every attempt; a consumer showing output should reset
when ``attempt`` grows. A status with a higher ``attempt`` supersedes a lower one.
Exactly one ``succeeded`` is published per build in normal operation; the
controller must still treat statuses idempotently (first succeeded wins).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import nats.js.api
import nats.js.errors
from nats.js import JetStreamContext

from slipway import errors, streams

STREAM = "BUILDS"
JOBS_SUBJECT = "builds.jobs"
CONSUMER = "builders"
EVENTS_STREAM = "BUILD_EVENTS"
OUTPUT_PREFIX = "builds.output"
STATUS_PREFIX = "builds.status"
DEFAULT_ACK_WAIT = 30.0
DEFAULT_MAX_DELIVER = 3
EVENTS_MAX_AGE = 7 * 24 * 3600.0

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def output_subject(build_id: str) -> str:
    return f"{OUTPUT_PREFIX}.{build_id}"


def status_subject(build_id: str) -> str:
    return f"{STATUS_PREFIX}.{build_id}"


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class BuildJob:
    build_id: str  # one NATS subject token: letters, digits, - and _
    app: str
    source: str  # object name in the `sources` bucket
    buildpacks: list[str] = field(default_factory=list)  # empty: auto-detect
    config: dict[str, str] = field(default_factory=dict)
    stack: str = ""  # empty: the builder's stack

    def encode(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> BuildJob:
        try:
            obj = json.loads(data)
            job = cls(
                build_id=str(obj["build_id"]),
                app=str(obj["app"]),
                source=str(obj["source"]),
                buildpacks=[str(b) for b in obj.get("buildpacks") or []],
                config={str(k): str(v) for k, v in (obj.get("config") or {}).items()},
                stack=str(obj.get("stack") or ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.InvalidArgument(f"malformed build job: {exc}") from exc
        if not _ID_RE.match(job.build_id):
            raise errors.InvalidArgument(f"build id {job.build_id!r} is not a valid subject token")
        return job


@dataclass(frozen=True)
class OutputLine:
    seq: int
    line: str
    ts: float
    attempt: int = 1

    def encode(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> OutputLine:
        obj = json.loads(data)
        return cls(
            seq=int(obj["seq"]),
            line=str(obj["line"]),
            ts=float(obj["ts"]),
            attempt=int(obj.get("attempt", 1)),
        )


@dataclass(frozen=True)
class BuildStatus:
    build_id: str
    status: str  # running | succeeded | failed
    attempt: int
    builder: str
    # succeeded only: {"digest", "size", "stack"} and the slug manifest's fields
    slug: dict[str, Any] | None = None
    process_types: dict[str, str] = field(default_factory=dict)
    release_command: str | None = None
    buildpacks: list[str] = field(default_factory=list)
    error: str | None = None  # failed only: one sentence for the user
    ts: float = field(default_factory=time.time)
    # The build's app: lets the controller read the record directly. Empty from
    # builders older than this field (the controller then searches by id).
    app: str = ""

    def encode(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> BuildStatus:
        obj = json.loads(data)
        return cls(
            build_id=str(obj["build_id"]),
            status=str(obj["status"]),
            attempt=int(obj.get("attempt", 1)),
            builder=str(obj.get("builder", "")),
            slug=obj.get("slug"),
            process_types={str(k): str(v) for k, v in (obj.get("process_types") or {}).items()},
            release_command=obj.get("release_command"),
            buildpacks=[str(b) for b in obj.get("buildpacks") or []],
            error=obj.get("error"),
            ts=float(obj.get("ts", 0.0)),
            app=str(obj.get("app") or ""),
        )


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1, create: bool = True) -> None:
    """Create BUILDS and BUILD_EVENTS when missing, or raise their replicas to ``replicas``
    (idempotent; any party may call it). ``create=False``: check they exist."""
    wanted = [
        nats.js.api.StreamConfig(
            name=STREAM,
            subjects=[JOBS_SUBJECT],
            retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
            storage=nats.js.api.StorageType.FILE,
            num_replicas=replicas,
        ),
        nats.js.api.StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{OUTPUT_PREFIX}.*", f"{STATUS_PREFIX}.*"],
            retention=nats.js.api.RetentionPolicy.LIMITS,
            storage=nats.js.api.StorageType.FILE,
            max_age=EVENTS_MAX_AGE,
            num_replicas=replicas,
        ),
    ]
    for cfg in wanted:
        await streams.ensure(js, cfg, create=create)


async def submit(js: JetStreamContext, job: BuildJob, *, replicas: int = 1) -> None:
    """What the controller calls to queue a build (after storing the source)."""
    await ensure_streams(js, replicas=replicas)
    await js.publish(JOBS_SUBJECT, job.encode(), stream=STREAM)
