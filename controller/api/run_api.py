"""RunDyno: the client's stream to a one-off dyno, relayed to the node's AttachService.

    CLI ──RunDyno (bidi)──▶ controller ──Attach (bidi, Bearer = placement token)──▶ agent ── shim
        start, stdin,                      start, stdin,                             │
        stdin_eof, resize ───────────────▶ stdin_eof, resize ───────────────────────▶│
        ◀── started, stdout, stderr, exited ◀── stdout, stderr, exit_status ◀─────────┘

One session is four tasks owned by the call: client -> agent, agent -> client
(through a small bounded queue, so a slow client slows the dyno, never our
memory), the idle watch and the placement's lease. The session ends the dyno
(deletes its placement) however it ends:

    the command exits        the agent's exit status is passed on as `exited`
    the client goes away     the call is cancelled; the dyno gets SIGHUP
    idle (no input, no output for `idle_seconds`)
                             a notice on stderr, then the dyno is ended and its
                             exit status (usually 129, SIGHUP) still reported
    ps:stop run.N            the agent stops it; its exit status is reported

Every call has a bound: the agent call carries `max_seconds` as its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from controller.api.auth import Access
from controller.api.endpoint import Admitted, record_change
from controller.loops.oneoff import OneOffs, RunRequest, Started
from controller.store.audit import AuditTrail
from slipway import errors, tls
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.pki import Bundle
from slipway.v1 import node_pb2 as npb
from slipway.v1 import node_pb2_grpc
from slipway.v1 import platform_pb2 as pb

log = slog.get("controller.run")

START_TIMEOUT = 10.0  # the first message of the client
OUT_QUEUE = 16  # messages on their way to the client
END_WAIT = 60.0  # after ending a dyno, how long its exit status may take
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 1024 * 1024),
]


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def attach_channel(target: str, credentials: Bundle | None) -> grpc.aio.Channel:
    """A channel to a node's AttachService: TLS with our bundle, plaintext without."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    creds = tls.grpc_channel_credentials(credentials)
    return grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS)


def run_request(start: pb.RunDynoStart) -> RunRequest:
    return RunRequest(
        app=start.app,
        command=start.command,
        attach=start.attach,
        tty=start.tty,
        rows=int(start.size.rows),
        cols=int(start.size.cols),
        size=start.dyno_size,
    )


def to_agent(msg: pb.RunDynoRequest) -> npb.AttachInput | None:
    kind = msg.WhichOneof("body")
    if kind == "stdin":
        return npb.AttachInput(stdin=msg.stdin)
    if kind == "stdin_eof":
        return npb.AttachInput(stdin_eof=True)
    if kind == "resize":
        return npb.AttachInput(
            resize=npb.AttachWindowSize(rows=msg.resize.rows, cols=msg.resize.cols)
        )
    return None  # a second start, or unknown: ignored


def to_client(msg: npb.AttachOutput) -> pb.RunDynoResponse:
    kind = msg.WhichOneof("body")
    if kind == "stdout":
        return pb.RunDynoResponse(stdout=msg.stdout)
    if kind == "stderr":
        return pb.RunDynoResponse(stderr=msg.stderr)
    return pb.RunDynoResponse(exited=pb.RunDynoExited(exit_status=msg.exit_status))


class Activity:
    """When input or output last moved (monotonic seconds)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last = clock.monotonic()

    def touch(self) -> None:
        self.last = self.clock.monotonic()

    def idle_for(self, now: float) -> float:
        return now - self.last


class RunService:
    def __init__(
        self,
        oneoffs: OneOffs,
        access: Access,
        *,
        idle_seconds: float = 3600.0,
        max_seconds: float = 86400.0,
        clock: Clock = SystemClock(),
        credentials: Bundle | None = None,
    ) -> None:
        self.clock = clock
        self.oneoffs = oneoffs
        # With a bundle, the agent's AttachService is reached over TLS: its
        # certificate must be the cluster CA's and name the node's address.
        self.credentials = credentials
        self.access = access
        # Set by the server: where a started one-off dyno is recorded.
        self.audit: AuditTrail | None = None
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds

    async def run_dyno(
        self,
        requests: AsyncIterator[pb.RunDynoRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.RunDynoResponse]:
        try:
            # A bad token is refused before waiting for the first message.
            await self.access.tokens.identify(context)
            try:
                first = await asyncio.wait_for(anext(aiter(requests), None), START_TIMEOUT)
            except TimeoutError:
                first = None
            if first is None or first.WhichOneof("body") != "start":
                raise errors.InvalidArgument("the first RunDyno message must be start")
            who = await self.access.admit(context, "RunDyno", first.start.app)
            started = await self.oneoffs.start(run_request(first.start))
            await record_change(
                self, "RunDyno", Admitted(who, None, first.start.app, first.start), context
            )
        except errors.SlipwayError as exc:
            log.info("run refused", error=exc.message, code=exc.code.name)
            await context.abort(exc.code, exc.message, errors.trailers(exc))
            return
        except Exception:
            log.exception("run failed")
            await context.abort(
                grpc.StatusCode.INTERNAL,
                "internal error in the controller",
                ((errors.REASON_KEY, "internal"),),
            )
            return
        p = started.placement
        yield pb.RunDynoResponse(
            started=pb.RunDynoStarted(
                dyno=p.name, node=p.node, release=p.release, instance_id=p.instance_id
            )
        )
        if not first.start.attach:
            return
        session = _Session(self, started, requests)
        try:
            async for out in session.run():
                yield out
        finally:
            await session.close()


class _Session:
    """One attached dyno: the relay's tasks, and ending the dyno exactly once."""

    def __init__(
        self,
        service: RunService,
        started: Started,
        requests: AsyncIterator[pb.RunDynoRequest],
    ) -> None:
        self.service = service
        self.started = started
        self.requests = requests
        self.out: asyncio.Queue[pb.RunDynoResponse | None] = asyncio.Queue(OUT_QUEUE)
        self.activity = Activity(service.clock)
        self.tasks: list[asyncio.Task[None]] = []
        self.ended = False
        self.end_reason = ""
        self.began = service.clock.monotonic()
        p = started.placement
        self.log = log.bind(app=p.app, dyno=p.name, node=p.node)
        target = host_port(started.node.address, started.node.attach_port)
        self.channel = attach_channel(target, service.credentials)
        self.call = node_pb2_grpc.AttachServiceStub(self.channel).Attach(
            metadata=(("authorization", f"Bearer {p.attach_token}"),),
            timeout=service.max_seconds,
        )

    async def run(self) -> AsyncIterator[pb.RunDynoResponse]:
        self.log.info("run session started")
        # Before the tasks: a gRPC call takes one write at a time, and from here on
        # only _from_client writes.
        start = npb.AttachStart(instance_id=self.started.placement.instance_id)
        try:
            await self.call.write(npb.AttachInput(start=start))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            self.log.warning("cannot reach the node's attach service", error=str(exc))
        if self.started.lease_id is not None:
            lease = self.started.lease_id
            self.tasks.append(asyncio.create_task(self.service.oneoffs.keep_alive(lease)))
        self.tasks.append(asyncio.create_task(self._from_agent()))
        self.tasks.append(asyncio.create_task(self._from_client()))
        self.tasks.append(asyncio.create_task(self._watch_idle()))
        while True:
            item = await self.out.get()
            if item is None:
                return
            yield item

    async def _from_agent(self) -> None:
        exit_status: int | None = None
        try:
            while exit_status is None:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    break
                assert isinstance(msg, npb.AttachOutput)
                self.activity.touch()
                response = to_client(msg)
                if response.WhichOneof("body") == "exited":
                    exit_status = msg.exit_status
                    response.exited.reason = self.end_reason
                await self.out.put(response)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self.log.warning("attach to the dyno failed", error=detail)
            await self.out.put(
                pb.RunDynoResponse(stderr=f"slipway: lost the dyno: {detail}\n".encode())
            )
        if exit_status is None:
            lost = pb.RunDynoExited(exit_status=-1, reason=self.end_reason or "lost")
            await self.out.put(pb.RunDynoResponse(exited=lost))
        await self.out.put(None)

    async def _from_client(self) -> None:
        try:
            async for msg in self.requests:
                forward = to_agent(msg)
                if forward is None:
                    continue
                self.activity.touch()
                await self.call.write(forward)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        # The client closed its side without waiting for the exit: hang up.
        await self.end("client closed its stream")

    async def _watch_idle(self) -> None:
        limit = self.service.idle_seconds
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            if self.activity.idle_for(self.service.clock.monotonic()) >= limit:
                break
        notice = f"\r\nslipway: no input or output for {limit:g} s; ending the dyno\r\n"
        self.end_reason = "idle"
        await self.out.put(pb.RunDynoResponse(stderr=notice.encode()))
        await self.end("idle")

    async def end(self, why: str) -> None:
        """End the dyno (once); its exit status should follow, else give up after END_WAIT."""
        if self.ended:
            return
        self.ended = True
        self.log.info("ending one-off dyno", reason=why)
        await self.service.oneoffs.end(self.started.placement, self.started.lease_id)
        await asyncio.sleep(END_WAIT)
        self.call.cancel()

    async def close(self) -> None:
        """The session is over (exit, client gone or error): no task outlives it."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=1.0)
        self.call.cancel()
        if not self.ended:
            self.ended = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.service.oneoffs.end(self.started.placement, self.started.lease_id), 5.0
                )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.channel.close(), 1.0)
        self.log.info(
            "run session ended",
            reason=self.end_reason or "exit",
            duration_ms=round((self.service.clock.monotonic() - self.began) * 1000),
        )
