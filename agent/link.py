"""The agent's link to the controller: Register, then one long Connect stream.

    Register (deadline rpc_timeout) -> session id, heartbeat interval
    Connect  (bidi; bounded by a session deadline, then renewed)
        agent -> controller: Heartbeat every interval (host metrics + every dyno),
                             DynoEvent for each state change
        controller -> agent: DesiredDynos -> supervisor.set_desired
                             RestartDyno / StopDyno -> supervisor.restart / stop_dyno

Any failure ends the session; the loop reconnects with backoff, trying the
listed controllers in turn. Nothing here touches a running dyno: while the
controller is away the supervisor keeps the last desired set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from agent import convert, metrics
from agent.config import AGENT_VERSION, AgentConfig
from agent.supervisor import DynoSupervisor
from slipway import errors, log, tls
from slipway.backoff import Backoff
from slipway.v1 import node_pb2 as pb
from slipway.v1 import node_pb2_grpc

logger = log.get("agent.link")

# A Connect stream still carries a deadline (every call does); when it
# expires the agent simply opens a new session.
SESSION_DEADLINE = 3600.0
OUTBOX_SIZE = 256
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class ControllerLink:
    def __init__(self, config: AgentConfig, supervisor: DynoSupervisor) -> None:
        self.config = config
        self.sup = supervisor
        self.connected = asyncio.Event()
        self.sessions = 0
        self.attach_port = 0  # the AttachService's bound port, once it listens
        self._log = logger.bind(node=config.node)

    async def run(self) -> None:
        timings = self.config.timings
        backoff = Backoff(initial=timings.reconnect_initial, maximum=timings.reconnect_max)
        await self.sup.ready.wait()
        if not self.config.controllers:
            self._log.warning("no controller configured; keeping adopted dynos only")
            await asyncio.Future()
        attempt = 0
        while True:
            address = self.config.controllers[attempt % len(self.config.controllers)]
            attempt += 1
            started = time.monotonic()
            try:
                await self._session(address)
            except (grpc.aio.AioRpcError, errors.SlipwayError, OSError) as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                self._log.warning("controller link lost", address=address, error=detail)
            except Exception:
                # A bug in one session must not end the agent: dynos keep running.
                self._log.exception("controller session failed", address=address)
            finally:
                self.connected.clear()
            if time.monotonic() - started > 30:
                backoff.reset()  # a session that lasted was a success
            await asyncio.sleep(backoff.next())

    def channel(self, address: str) -> grpc.aio.Channel:
        """TLS with the node's bundle (the controller's certificate is checked
        against the cluster CA); plaintext without credentials."""
        bundle = self.config.credentials
        if bundle is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        creds = tls.grpc_channel_credentials(bundle)
        return grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS)

    def _register_request(self) -> pb.RegisterRequest:
        cfg = self.config
        request = pb.RegisterRequest(
            node=cfg.node,
            advertise_address=cfg.advertise_address,
            memory_mb=cfg.memory_mb,
            labels=cfg.labels,
            agent_version=AGENT_VERSION,
            port_range_start=cfg.port_range[0],
            port_range_end=cfg.port_range[1],
            dynos=[convert.status_to_pb(s) for s in self.sup.snapshot()],
            attach_port=self.attach_port,
        )
        if cfg.credentials is not None:
            # Read each time: a re-issued certificate shows without a restart.
            request.certificate_not_after.FromDatetime(cfg.credentials.identity().not_after)
        return request

    def _heartbeat(self) -> pb.Heartbeat:
        return convert.heartbeat(
            metrics.host_metrics(self.config.data_dir),
            self.sup.snapshot(),
            capacity_mb=self.config.memory_mb,
            reserved_mb=self.sup.reserved_memory_mb,
            now=time.time(),
        )

    async def _session(self, address: str) -> None:
        timings = self.config.timings
        async with self.channel(address) as channel:
            stub = node_pb2_grpc.NodeServiceStub(channel)
            metadata = (
                (("authorization", f"Bearer {self.config.token}"),) if self.config.token else ()
            )
            reply: pb.RegisterResponse = await stub.Register(
                self._register_request(), timeout=timings.rpc_timeout, metadata=metadata
            )
            interval = float(reply.heartbeat_interval_seconds or timings.heartbeat_interval)
            interval = min(interval, timings.heartbeat_interval)
            # Events queued while disconnected are stale: the heartbeat that
            # opens the stream carries every dyno's current status.
            while not self.sup.events.empty():
                self.sup.events.get_nowait()
            outbox: asyncio.Queue[pb.AgentMessage] = asyncio.Queue(OUTBOX_SIZE)
            outbox.put_nowait(
                pb.AgentMessage(session_id=reply.session_id, heartbeat=self._heartbeat())
            )

            async def requests() -> AsyncIterator[pb.AgentMessage]:
                while True:
                    yield await outbox.get()

            call = stub.Connect(requests(), timeout=SESSION_DEADLINE, metadata=metadata)
            self.sessions += 1
            self.connected.set()
            self._log.info("controller connected", address=address, session=reply.session_id)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._heartbeats(outbox, interval))
                    tg.create_task(self._events(outbox))
                    await self._receive(call)
                    raise errors.Unavailable("controller closed the stream")
            except* Exception as group:
                raise group.exceptions[0] from None
            finally:
                call.cancel()

    async def _heartbeats(self, outbox: asyncio.Queue[pb.AgentMessage], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            _put_latest(outbox, pb.AgentMessage(heartbeat=self._heartbeat()))

    async def _events(self, outbox: asyncio.Queue[pb.AgentMessage]) -> None:
        while True:
            status = await self.sup.events.get()
            event = pb.DynoEvent(dyno=convert.status_to_pb(status))
            _put_latest(outbox, pb.AgentMessage(event=event))

    async def _receive(self, call: grpc.aio.StreamStreamCall) -> None:
        async for msg in call:
            await self._apply(msg)

    async def _apply(self, msg: pb.ControllerMessage) -> None:
        kind = msg.WhichOneof("body")
        try:
            if kind == "desired":
                specs = [convert.spec_from_pb(a) for a in msg.desired.dynos]
                self._log.info("desired dynos", count=len(specs))
                await self.sup.set_desired(specs)
            elif kind == "restart":
                for key in self._keys(msg.restart.app, msg.restart.name, msg.restart.instance_id):
                    await self.sup.restart(key)
            elif kind == "stop":
                for key in self._keys(msg.stop.app, msg.stop.name, msg.stop.instance_id):
                    await self.sup.stop_dyno(key)
        except errors.SlipwayError as exc:
            # A bad instruction must not end the session.
            self._log.warning("controller message refused", kind=kind, error=str(exc))

    def _keys(self, app: str, name: str, instance_id: str) -> list[str]:
        return [instance_id] if instance_id else self.sup.find(app, name)


def _put_latest(outbox: asyncio.Queue[pb.AgentMessage], msg: pb.AgentMessage) -> None:
    """Never wait on a slow controller: drop the oldest message instead."""
    if outbox.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            outbox.get_nowait()
    outbox.put_nowait(msg)
