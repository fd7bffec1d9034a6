"""AttachService: how a controller reaches an attached one-off dyno's stdio.

    controller ──Attach (gRPC bidi; Bearer = the dyno's attach token)──▶ AttachServer
        AttachInput: start, stdin, stdin_eof, resize            │ wait: placed here, shim listening
        AttachOutput: stdout, stderr, then exit_status          ▼
                                  DATA/dynos/X/attach.sock ── shim ── runc run ── dyno

The server listens on the node's advertise address and ``attach_port`` (0: any
free port; the bound one goes into the node record, where controllers read it).

With credentials the port is TLS with the node's certificate and takes only
callers presenting a controller's certificate from the cluster CA.

Authentication: each attached placement carries a random token (written by
the controller beside the placement, delivered to this agent in its desired
set over the authenticated NodeService stream). A call must present exactly
that token, so only something that could read the placement can attach, and
a token opens one dyno only.

Flow control: one frame is read from the shim only after the previous message
was handed to gRPC, and stdin is written to the shim with ``drain()``; the
shim in turn stops reading the dyno's output while its buffer is full. Memory
stays bounded whichever side is slow.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import time
from collections.abc import AsyncIterator

import grpc

from agent import attachwire as wire
from agent.config import AgentConfig
from agent.dyno import Dyno
from agent.supervisor import DynoSupervisor
from slipway import log, tls
from slipway.pki import Role
from slipway.v1 import node_pb2 as pb
from slipway.v1 import node_pb2_grpc

logger = log.get("agent.attach")

START_TIMEOUT = 10.0  # the first AttachInput must come this soon
MAX_SESSIONS = 64
READ_SIZE = 64 * 1024
POLL = 0.05


def bearer(context: grpc.aio.ServicerContext) -> str:
    metadata = dict(context.invocation_metadata() or ())
    scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class AttachServicer(node_pb2_grpc.AttachServiceServicer):
    def __init__(self, config: AgentConfig, supervisor: DynoSupervisor) -> None:
        self.config = config
        self.sup = supervisor
        self.sessions = 0

    async def Attach(
        self,
        request_iterator: AsyncIterator[pb.AttachInput],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.AttachOutput]:
        if self.sessions >= MAX_SESSIONS:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many attach sessions")
        if self.config.credentials is not None:
            peer = tls.peer_identity(context)
            if peer is None or peer.role is not Role.CONTROLLER:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, "only controllers may attach to dynos"
                )
        try:
            first = await asyncio.wait_for(anext(aiter(request_iterator), None), START_TIMEOUT)
        except TimeoutError:
            first = None
        if first is None or first.WhichOneof("body") != "start":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be start")
            return
        self.sessions += 1
        try:
            async for out in self._session(first.start.instance_id, request_iterator, context):
                yield out
        finally:
            self.sessions -= 1

    async def _session(
        self,
        key: str,
        requests: AsyncIterator[pb.AttachInput],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.AttachOutput]:
        deadline = time.monotonic() + self.config.timings.attach_timeout
        dyno = await self._wait_dyno(key, deadline)
        if dyno is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no dyno {key} on this node")
            return
        spec = dyno.record.spec
        token = bearer(context)
        if not (spec.attached and spec.attach_token and token) or not hmac.compare_digest(
            spec.attach_token.encode(), token.encode()
        ):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "bad attach token")
            return
        lg = logger.bind(app=spec.app, dyno=spec.name, node=self.config.node)
        conn = await self._connect(dyno, deadline)
        if conn is None:
            # It ended (or never launched) before anyone attached.
            status = dyno.record.exit_status
            lg.info("attach to an ended dyno", exit_status=status)
            if status is None:
                why = "did not start" if not dyno.exited.is_set() else "ended before attaching"
                note = f"slipway: {spec.name} {why}; `slipway logs -a {spec.app}` says why\n"
                yield pb.AttachOutput(stderr=note.encode())
            yield pb.AttachOutput(exit_status=-1 if status is None else status)
            return
        reader, writer = conn
        began = time.monotonic()
        lg.info("attached")
        pump = asyncio.create_task(_pump_input(requests, writer))
        exit_status: int | None = None
        try:
            decoder = wire.Decoder()
            while exit_status is None:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                for kind, payload in decoder.feed(data):
                    if kind == wire.STDOUT:
                        yield pb.AttachOutput(stdout=payload)
                    elif kind == wire.STDERR:
                        yield pb.AttachOutput(stderr=payload)
                    elif kind == wire.EXIT:
                        exit_status = wire.parse_exit(payload)
                        break
            # No EXIT frame: the shim went away (killed); the status is unknown.
            yield pb.AttachOutput(exit_status=-1 if exit_status is None else exit_status)
        finally:
            pump.cancel()
            writer.close()
            lg.info(
                "detached",
                exit_status=exit_status,
                duration_ms=round((time.monotonic() - began) * 1000),
            )

    async def _wait_dyno(self, key: str, deadline: float) -> Dyno | None:
        # The placement reaches this node with the controller's next desired set.
        while True:
            dyno = self.sup.dyno(key)
            if dyno is not None or time.monotonic() > deadline:
                return dyno
            await asyncio.sleep(POLL)

    async def _connect(
        self, dyno: Dyno, deadline: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect to the dyno's shim once it listens; None when the dyno ended first."""
        while True:
            try:
                return await _open(dyno)
            except OSError:
                pass
            if dyno.exited.is_set() or self.sup.dyno(dyno.key) is not dyno:
                return None
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(POLL)


async def _open(dyno: Dyno) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # Through /proc/self/fd: a Unix socket path may not exceed 108 bytes, and
    # the dyno directory can be deeper than that.
    dir_fd = os.open(dyno.paths.root, os.O_PATH | os.O_DIRECTORY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(f"/proc/self/fd/{dir_fd}/{dyno.paths.attach_sock.name}")
    except OSError:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    return await asyncio.open_unix_connection(sock=sock, limit=READ_SIZE)


async def _pump_input(
    requests: AsyncIterator[pb.AttachInput], writer: asyncio.StreamWriter
) -> None:
    """Controller -> shim; ``drain`` makes a fast client wait for the dyno."""
    try:
        async for msg in requests:
            kind = msg.WhichOneof("body")
            if kind == "stdin":
                data = msg.stdin
                for i in range(0, len(data), wire.MAX_PAYLOAD):
                    writer.write(wire.frame(wire.STDIN, data[i : i + wire.MAX_PAYLOAD]))
            elif kind == "stdin_eof":
                writer.write(wire.frame(wire.STDIN_EOF))
            elif kind == "resize":
                writer.write(wire.resize(msg.resize.rows, msg.resize.cols))
            await writer.drain()
    except (OSError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the shim or the controller went away; the read side ends the call


class AttachServer:
    """Serves AttachService on advertise_address:attach_port until cancelled."""

    def __init__(self, config: AgentConfig, supervisor: DynoSupervisor) -> None:
        self.config = config
        self.servicer = AttachServicer(config, supervisor)
        self.bound_port = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.so_reuseport", 0),
            ]
        )
        node_pb2_grpc.add_AttachServiceServicer_to_server(self.servicer, server)
        address = host_port(self.config.advertise_address, self.config.attach_port or 0)
        # With a bundle: TLS, and only controllers (their certificates) may call.
        creds = self.config.credentials
        self.bound_port = tls.add_port(server, address, creds, require_client_cert=bool(creds))
        if not self.bound_port:
            raise OSError(f"cannot listen on {address} for attach")
        await server.start()
        logger.info("attach service listening", node=self.config.node, port=self.bound_port)
        self.ready.set()
        try:
            await server.wait_for_termination()
        finally:
            await server.stop(1)
