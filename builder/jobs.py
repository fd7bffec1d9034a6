"""The build work queue on NATS JetStream, from the builder's side.

Each slot pulls one job at a time from the durable consumer ``builders`` of the
``BUILDS`` work-queue stream (see ``slipway.buildproto``). While a build runs the
slot sends ``in_progress()`` every third of ``ack_wait``, so a 15-minute build
keeps its job; a builder that dies stops sending them, the server redelivers
the job to another builder after ``ack_wait``, and ``num_delivered`` tells the
new builder which attempt it runs. The job is acknowledged only after the final
status has been published, so a crash between the two means one more attempt,
never a lost build.

Outcomes:
    BuildFailed (the app's fault)         failed status, ack: never retried
    every attempt died (max_deliver)      failed status from the advisory
                                          watcher, job deleted
    malformed job                         failed status when possible, term
    anything else (store down, sandbox)   nak with delay: another attempt,
                                          failed status when it was the last
    cancelled (shutdown)                  nak: another builder takes it now
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from builder.build import BuildRunner
from builder.buildpacks import BuildFailed
from slipway import buildproto as protocol
from slipway import errors, log, logline
from slipway.aio import raise_if_cancelling

_log = log.get("builder.jobs")
_FETCH_WAIT = 2.0  # how long one pull waits; bounds how fast a drain is noticed
_OUTPUT_QUEUE = 1000  # lines; when full the build's output blocks (backpressure)
_PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class QueueSettings:
    ack_wait: float = protocol.DEFAULT_ACK_WAIT
    max_deliver: int = protocol.DEFAULT_MAX_DELIVER
    retry_delay: float = 5.0
    # Copies of BUILDS and BUILD_EVENTS if this builder is the one creating them.
    replicas: int = 1
    # False with TLS: the controller creates the streams, the builder only its consumer.
    create_streams: bool = True


async def ensure_consumer(js: JetStreamContext, settings: QueueSettings) -> None:
    await protocol.ensure_streams(js, replicas=settings.replicas, create=settings.create_streams)
    config = nats.js.api.ConsumerConfig(
        durable_name=protocol.CONSUMER,
        ack_policy=nats.js.api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=settings.max_deliver,
        filter_subject=protocol.JOBS_SUBJECT,
        max_ack_pending=-1,
    )
    try:
        await js.consumer_info(protocol.STREAM, protocol.CONSUMER)
    except nats.js.errors.NotFoundError:
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await js.add_consumer(protocol.STREAM, config)


MAX_DELIVERIES_ADVISORY = (
    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{protocol.STREAM}.{protocol.CONSUMER}"
)


async def fail_exhausted_jobs(nc: NATS, name: str) -> None:
    """Report builds whose every attempt died (no builder lived to say so).

    The server announces a job that reached max_deliver with an advisory; one
    builder of the pool (queue group) publishes the final `failed` status and
    removes the job, which a work-queue stream would otherwise keep forever.
    Returns only when cancelled.
    """
    js = nc.jetstream()

    async def on_advisory(msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries") or 0)
            try:
                raw = await js.get_msg(protocol.STREAM, seq)
            except nats.js.errors.NotFoundError:
                return  # already settled
            job = protocol.BuildJob.decode(raw.data or b"")
            await _publish(
                js,
                protocol.status_subject(job.build_id),
                protocol.BuildStatus(
                    job.build_id,
                    protocol.FAILED,
                    deliveries,
                    name,
                    error=(
                        f"Build failed: it was attempted {deliveries} times and no builder "
                        "finished it"
                    ),
                    app=job.app,
                ).encode(),
            )
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_msg(protocol.STREAM, seq)
            _log.error("build attempts exhausted", app=job.app, build=job.build_id)
        except Exception as exc:  # one bad advisory must not stop the next ones
            _log.error("max-deliveries advisory not handled", error=str(exc))

    sub = await nc.subscribe(MAX_DELIVERIES_ADVISORY, queue="builders", cb=on_advisory)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class OutputPublisher:
    """Publishes one build's lines in order through a bounded queue."""

    def __init__(self, js: JetStreamContext, build_id: str, attempt: int) -> None:
        self._js = js
        self._subject = protocol.output_subject(build_id)
        self._attempt = attempt
        self._seq = 0
        self._queue: asyncio.Queue[protocol.OutputLine | None] = asyncio.Queue(_OUTPUT_QUEUE)

    async def line(self, text: str) -> None:
        self._seq += 1
        await self._queue.put(protocol.OutputLine(self._seq, text, time.time(), self._attempt))

    async def close(self) -> None:
        await self._queue.put(None)

    async def run(self) -> None:
        while (item := await self._queue.get()) is not None:
            await _publish(self._js, self._subject, item.encode())


async def _publish(js: JetStreamContext, subject: str, data: bytes) -> None:
    delay = 0.2
    for attempt in range(_PUBLISH_ATTEMPTS):
        try:
            await js.publish(subject, data, timeout=5)
            return
        except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError):
            if attempt == _PUBLISH_ATTEMPTS - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 2


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class BuildQueue:
    """Pulls jobs for ``slots`` concurrent builds and reports what happens to them."""

    def __init__(
        self,
        nc: NATS,
        runner: BuildRunner,
        *,
        name: str,
        slots: int = 1,
        settings: QueueSettings | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._runner = runner
        self.name = name
        self._slots = slots
        self._settings = settings or QueueSettings()
        self._accepting = asyncio.Event()
        self._accepting.set()
        self.busy = 0
        self.ready = asyncio.Event()  # set once the consumer is bound (systemd readiness)

    @property
    def accepting(self) -> bool:
        return self._accepting.is_set()

    def stop_accepting(self) -> None:
        """Drain: finish the builds in hand, take no new job."""
        self._accepting.clear()

    async def run(self) -> None:
        await self._bind()
        _log.info("builder ready", node=self.name, slots=self._slots)
        self.ready.set()
        async with asyncio.TaskGroup() as tg:
            exhausted = tg.create_task(fail_exhausted_jobs(self._nc, self.name))
            slots = [tg.create_task(self._slot(slot)) for slot in range(self._slots)]
            # Slots return after a drain; the advisory watcher then goes too.
            await asyncio.gather(*slots)
            exhausted.cancel()

    async def _bind(self) -> None:
        """Make sure of the streams and the consumer, waiting out a JetStream that
        does not answer yet (a NATS server of the cluster restarting, a stream's
        leader being elected): a builder started then must not die of it."""
        delay = 0.5
        while True:
            try:
                await ensure_consumer(self._js, self._settings)
                return
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.js.errors.ServiceUnavailableError,
            ) as exc:
                _log.warning("jetstream not answering yet", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _slot(self, slot: int) -> None:
        # One pull subscription per slot: fetches never interleave between slots.
        sub = await self._js.pull_subscribe_bind(durable=protocol.CONSUMER, stream=protocol.STREAM)
        try:
            while self._accepting.is_set():
                try:
                    msgs = await sub.fetch(1, timeout=_FETCH_WAIT)
                except nats.errors.TimeoutError:
                    raise_if_cancelling()
                    continue
                if _cancelling():
                    # Asked to stop as a job arrived: hand it straight back.
                    for msg in msgs:
                        with contextlib.suppress(Exception):
                            await asyncio.shield(msg.nak())
                    raise asyncio.CancelledError
                for msg in msgs:
                    self.busy += 1
                    try:
                        await self._handle(msg)
                    except Exception as exc:
                        # NATS unreachable while reporting: the job comes back after
                        # ack_wait, so the slot just carries on with the next one.
                        _log.error("build job not settled", error=str(_leaf(exc)))
                    finally:
                        self.busy -= 1
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _status(self, status: protocol.BuildStatus) -> None:
        await _publish(self._js, protocol.status_subject(status.build_id), status.encode())

    async def _app_log(self, app: str, message: str) -> None:
        """One line in the app's log stream (`slipway logs`), like Heroku's api lines."""
        with contextlib.suppress(Exception):  # the log stream is best effort here
            await self._nc.publish(
                logline.subject(app, logline.Origin.BUILDER),
                logline.LogLine(app, "api", "build", message).encode(),
            )

    async def _handle(self, msg: Msg) -> None:
        attempt = msg.metadata.num_delivered or 1
        try:
            job = protocol.BuildJob.decode(msg.data)
        except errors.InvalidArgument as exc:
            _log.error("malformed build job dropped", error=str(exc))
            await msg.term()
            return
        out = OutputPublisher(self._js, job.build_id, attempt)
        started = time.monotonic()
        log_keys = {"app": job.app, "build": job.build_id, "attempt": attempt}
        _log.info("build started", **log_keys)
        await self._status(
            protocol.BuildStatus(job.build_id, protocol.RUNNING, attempt, self.name, app=job.app)
        )
        await self._app_log(
            job.app, f"Build {job.build_id} started on {self.name} (attempt {attempt})"
        )
        try:
            async with asyncio.TaskGroup() as tg:
                publisher = tg.create_task(out.run())
                heartbeat = tg.create_task(self._heartbeat(msg))
                try:
                    status = await self._build(job, attempt, out)
                finally:
                    heartbeat.cancel()
                    await out.close()
                await publisher
        except asyncio.CancelledError:
            # Shutdown mid-build: give the job back at once rather than after ack_wait.
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            _log.warning("build handed back", **log_keys)
            raise
        except Exception as exc:
            await self._infra_failure(msg, job, attempt, _leaf(exc))
            return
        await self._status(status)
        await msg.ack_sync()
        await self._app_log(job.app, f"Build {job.build_id} {status.status}")
        _log.info(
            "build finished",
            status=status.status,
            duration_ms=int((time.monotonic() - started) * 1000),
            **log_keys,
        )

    async def _build(
        self, job: protocol.BuildJob, attempt: int, out: OutputPublisher
    ) -> protocol.BuildStatus:
        if attempt > 1:
            await out.line(
                f"-----> Build restarted on {self.name} (attempt {attempt} of "
                f"{self._settings.max_deliver}): the previous builder stopped before finishing"
            )
        try:
            manifest = await self._runner.run(job, attempt, out.line)
        except BuildFailed as exc:
            await out.line(f" !     {exc}")
            await out.line(" !     Build failed")
            return protocol.BuildStatus(
                job.build_id, protocol.FAILED, attempt, self.name, error=str(exc), app=job.app
            )
        await out.line("-----> Build succeeded")
        return protocol.BuildStatus(
            job.build_id,
            protocol.SUCCEEDED,
            attempt,
            self.name,
            slug=manifest.to_dict(),
            process_types=manifest.process_types,
            release_command=manifest.release_command,
            buildpacks=manifest.buildpacks,
            app=job.app,
        )

    async def _infra_failure(
        self, msg: Msg, job: protocol.BuildJob, attempt: int, exc: BaseException
    ) -> None:
        _log.error(
            "build attempt failed", app=job.app, build=job.build_id, attempt=attempt, error=str(exc)
        )
        if attempt >= self._settings.max_deliver:
            with contextlib.suppress(Exception):
                await self._status(
                    protocol.BuildStatus(
                        job.build_id,
                        protocol.FAILED,
                        attempt,
                        self.name,
                        error=f"Build failed after {attempt} attempts: {exc}",
                        app=job.app,
                    )
                )
            await msg.term()
        else:
            await msg.nak(delay=self._settings.retry_delay)

    async def _heartbeat(self, msg: Msg) -> None:
        interval = max(self._settings.ack_wait / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except Exception as exc:  # a lost heartbeat is logged, the build goes on
                _log.warning("in-progress ack failed", error=str(exc))
