"""NodeService: agents register, then hold one stream with their controller.

Down the stream: the node's full desired dyno set, on connect and after every
change (level-based; the agent reconciles to whatever it last received).
Up the stream: heartbeats with host and dyno figures (kept in etcd for
``slipway nodes``) and dyno state changes (logged). Presence, dyno statuses and
routes are the agent's own etcd records under its lease, so nothing here is
needed for running dynos to keep running and serving.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import grpc

from controller.api.auth import Caller, Tokens
from controller.core.scheduler import Placement
from controller.core.validation import NODE_NAME_RE
from controller.store.placements import PlacementIndex
from controller.store.snapshot import ReleaseCache
from slipway import errors
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.v1 import node_pb2 as npb
from slipway.v1 import node_pb2_grpc

log = slog.get("controller.nodes")

_STATE_NAMES = {
    npb.DYNO_STATE_STARTING: "starting",
    npb.DYNO_STATE_UP: "up",
    npb.DYNO_STATE_CRASHED: "crashed",
    npb.DYNO_STATE_DOWN: "down",
}


class NodeAPI(node_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        tokens: Tokens,
        placements: PlacementIndex,
        *,
        heartbeat_seconds: int = 5,
        ttl_seconds: int = 15,
        resend_seconds: float = 30.0,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        self.etcd = etcd
        self.keys = keys
        self.tokens = tokens
        self.placements = placements
        self.releases = ReleaseCache(etcd, keys)
        self.heartbeat_seconds = heartbeat_seconds
        self.ttl_seconds = ttl_seconds
        self.resend_seconds = resend_seconds
        self._sessions: dict[str, str] = {}
        self._cert_expiry: dict[str, int] = {}  # node -> its certificate's not_after (s)
        self.connected: dict[str, str] = {}  # node -> session

    async def _auth(
        self,
        context: grpc.aio.ServicerContext,
        node: str | None = None,
        caller: Caller | None = None,
    ) -> Caller:
        """The caller (identified once), checked as ``node`` when given
        (:func:`controller.api.auth.authorize` decides); a refusal aborts the call."""
        try:
            caller = caller or await self.tokens.identify(context)
            if node is not None:
                self.tokens.authorize_node(caller, node)
            return caller
        except errors.SlipwayError as exc:
            log.warning("node call refused", node=node or "", error=exc.message)
            await context.abort(exc.code, exc.message, errors.trailers(exc))
            raise AssertionError("unreachable: abort raises") from exc

    async def Register(
        self, request: npb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> npb.RegisterResponse:
        await self._auth(context, request.node)
        if not NODE_NAME_RE.match(request.node):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid node name {request.node!r}: letters, digits, '.', '-' and '_', up to 63",
            )
        session = uuid.uuid4().hex
        self._sessions[session] = request.node
        if len(self._sessions) > 10_000:
            self._sessions = {session: request.node}
        if request.HasField("certificate_not_after"):
            self._cert_expiry[request.node] = request.certificate_not_after.ToSeconds()
        else:
            self._cert_expiry.pop(request.node, None)
        log.info(
            "node registered",
            node=request.node,
            address=request.advertise_address,
            memory_mb=request.memory_mb,
            dynos=len(request.dynos),
            attach_port=request.attach_port,
        )
        return npb.RegisterResponse(
            session_id=session,
            heartbeat_interval_seconds=self.heartbeat_seconds,
            ttl_seconds=self.ttl_seconds,
        )

    async def assignment(self, p: Placement) -> npb.DynoAssignment | None:
        release = await self.releases.get(p.app, p.release)
        if release is None:
            return None
        return npb.DynoAssignment(
            app=p.app,
            name=p.name,
            process_type=p.type,
            release=p.release,
            command=p.command or release.process_types.get(p.type, ""),
            env=release.config,
            slug_digest=release.slug.digest,
            slug_size_bytes=release.slug.size_bytes,
            memory_mb=p.memory_mb,
            max_processes=p.max_processes,
            cpu_shares=p.cpu_shares,
            instance_id=p.instance_id,
            attached=p.kind == "attached",
            attach=npb.AttachSpec(tty=p.tty, rows=p.rows, cols=p.cols, token=p.attach_token)
            if p.kind == "attached"
            else None,
        )

    async def desired_for(self, node: str) -> npb.DesiredDynos:
        assignments = []
        for p in self.placements.for_node(node):
            a = await self.assignment(p)
            if a is not None:
                assignments.append(a)
        return npb.DesiredDynos(dynos=assignments)

    async def Connect(
        self,
        request_iterator: AsyncIterator[npb.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[npb.ControllerMessage]:
        caller = await self._auth(context)
        first = await anext(aiter(request_iterator), None)
        node = self._sessions.get(first.session_id) if first else None
        if first is None or node is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "unknown session; register again"
            )
            return
        # A session id is no credential: the token must be the session's node's.
        await self._auth(context, node, caller)
        self.connected[node] = first.session_id
        log.info("node connected", node=node)
        await self._handle(node, first)
        reader = asyncio.create_task(self._read(node, request_iterator))
        try:
            await self.placements.loaded.wait()
            sent: npb.DesiredDynos | None = None
            version = -1
            last_sent = 0.0
            while not reader.done():
                version = await self.placements.changed(version, timeout=1.0)
                desired = await self.desired_for(node)
                now = self.clock.monotonic()
                if desired != sent or now - last_sent > self.resend_seconds:
                    yield npb.ControllerMessage(desired=desired)
                    sent, last_sent = desired, now
        finally:
            reader.cancel()
            if self.connected.get(node) == first.session_id:
                del self.connected[node]
            log.info("node disconnected", node=node)

    async def _read(self, node: str, messages: AsyncIterator[npb.AgentMessage]) -> None:
        try:
            async for message in messages:
                await self._handle(node, message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass

    async def _handle(self, node: str, message: npb.AgentMessage) -> None:
        body = message.WhichOneof("body")
        if body == "heartbeat":
            await self._store_metrics(node, message.heartbeat)
        elif body == "event":
            d = message.event.dyno
            log.info(
                "dyno state",
                node=node,
                app=d.app,
                dyno=d.name,
                state=_STATE_NAMES.get(d.state, "unknown"),
                release=d.release,
                exit_status=d.exit_status,
                reason=d.reason,
            )

    async def _store_metrics(self, node: str, hb: npb.Heartbeat) -> None:
        metrics = {
            "node": node,
            "at": self.clock.now(),
            "cpu_percent": hb.cpu_percent,
            "memory_total_bytes": hb.memory_total_bytes,
            "memory_used_bytes": hb.memory_used_bytes,
            "disk_total_bytes": hb.disk_total_bytes,
            "disk_used_bytes": hb.disk_used_bytes,
            "load1": hb.load1,
            "capacity_memory_mb": hb.capacity_memory_mb,
            "reserved_memory_mb": hb.reserved_memory_mb,
            "dynos": len(hb.dynos),
            "dyno_memory": {d.instance_id: d.memory_bytes for d in hb.dynos},
            "dyno_restarts": {d.instance_id: d.restarts for d in hb.dynos},
        }
        if node in self._cert_expiry:
            metrics["cert_not_after"] = self._cert_expiry[node]
        try:
            await self.etcd.put(
                self.keys.node_metrics(node), json.dumps(metrics, separators=(",", ":")).encode()
            )
        except errors.SlipwayError as exc:
            log.warning("cannot store node metrics", node=node, error=str(exc))
