"""Building blocks for the router's integration tests (no tests here).

- :class:`Dyno`: a tiny asyncio HTTP/1.1 server standing in for a web dyno;
  it counts the connections it accepted, so tests can prove the router never
  touched it.
- :func:`start_router`: a real :class:`router.server.Router` in this event
  loop, against the real etcd; returns once it listens and has its table.
- :func:`request` / :func:`read_response`: a raw HTTP client over real sockets,
  so tests control every byte (smuggling probes, pipelining, half-closes).
- :class:`LogTap`: subscribes to ``logs.{app}`` on the real nats-server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import nats
import uvloop

from router.config import Limits, Listen, LogConfig, RouterConfig
from router.server import Router
from slipway import certs, pki
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.logline import LogLine, app_filter, decode_batch
from tests.harness import secure
from tests.harness.wait import eventually_async

BASE = "example.test"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- dynos ---------------------------------------------------------------------
@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Req, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
    return lines[0], headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


class Dyno:
    """An HTTP/1.1 keep-alive server; ``handler`` may take over a request."""

    def __init__(self, name: str = "web.1", handler: Handler | None = None) -> None:
        self.name = name
        self.handler = handler
        self.connections = 0
        self.requests: list[Req] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Dyno:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.server.wait_closed()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                got = await read_head(reader)
                if got is None:
                    return
                line, headers = got
                method, path, _ = line.split(" ", 2)
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await read_body(reader, headers)
                req = Req(method, path, headers, body)
                self.requests.append(req)
                if self.handler is not None and await self.handler(req, reader, writer):
                    continue
                payload = f"hello from {self.name}".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(payload)}\r\nX-Dyno: {self.name}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Python 3.11's start_server logs a cancelled handler as an error at
            # shutdown; the handler is ending anyway, so end it quietly.
            return
        finally:
            writer.close()


async def ws_echo(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Handles the WebSocket handshake, then echoes frames until a close frame."""
    key = req.headers["sec-websocket-key"].encode()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    while True:
        opcode, payload = await read_frame(reader)
        writer.write(frame(opcode, payload, mask=False))
        await writer.drain()
        if opcode == 8:
            writer.close()
            raise ConnectionResetError  # ends the connection loop


def frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


# -- etcd route records --------------------------------------------------------
@dataclass
class Routes:
    etcd: Etcd
    keys: Keys

    async def app(self, app: str, **fields: object) -> None:
        record = {
            "app": app,
            "web": 1,
            "released": True,
            "maintenance": False,
            "crashed": False,
            "balance": "random",
        }
        record.update(fields)
        await self.etcd.put(self.keys.route_app(app), json.dumps(record).encode())

    async def dyno(self, app: str, dyno: Dyno | str, address: str | None = None) -> None:
        name = dyno if isinstance(dyno, str) else dyno.name
        addr = address or (dyno.address if isinstance(dyno, Dyno) else "")
        record = {"app": app, "dyno": name, "address": addr, "node": "n1", "release": 1}
        await self.etcd.put(self.keys.route_dyno(app, name), json.dumps(record).encode())

    async def remove_dyno(self, app: str, name: str) -> None:
        await self.etcd.delete(self.keys.route_dyno(app, name))

    async def domain(self, hostname: str, app: str) -> None:
        await self.etcd.put(self.keys.route_domain(hostname), json.dumps({"app": app}).encode())

    async def cert(self, hostname: str, chain: bytes, key: bytes) -> None:
        record = certs.encode(certs.Pair(chain, key), None)
        await self.etcd.put(self.keys.route_cert(hostname), record)

    async def remove_cert(self, hostname: str) -> None:
        await self.etcd.delete(self.keys.route_cert(hostname))


@contextlib.asynccontextmanager
async def routes(endpoint: str, prefix: str) -> AsyncIterator[Routes]:
    etcd = secure.root_etcd([endpoint])
    await etcd.connect()
    try:
        yield Routes(etcd, Keys(prefix))
    finally:
        await etcd.close()


# -- the router ----------------------------------------------------------------
FAST = Limits(
    connect_timeout=1.0,
    quarantine=5.0,
    first_byte_timeout=5.0,
    idle_timeout=5.0,
    client_keepalive_timeout=5.0,
    tick=0.05,
)


def router_config(
    endpoint: str, prefix: str, nats_url: str | None = None, **limits: float | int
) -> RouterConfig:
    return RouterConfig(
        listen=(Listen("127.0.0.1", 0),),
        etcd_endpoints=(endpoint,),
        etcd_prefix=prefix,
        base_domain=BASE,
        limits=replace(FAST, **limits),  # type: ignore[arg-type]
        logs=LogConfig(servers=(nats_url,) if nats_url else (), flush_interval=0.02),
        etcd_backoff_initial=0.1,
        etcd_backoff_max=0.5,
        credentials=secure.bundle(pki.Role.ROUTER),
    )


@dataclass
class RunningRouter:
    router: Router
    task: asyncio.Task[None]

    @property
    def port(self) -> int:
        return self.router.addresses[0][1]


@contextlib.asynccontextmanager
async def start_router(
    config: RouterConfig, *, need_logs: bool = False
) -> AsyncIterator[RunningRouter]:
    # The router runs on uvloop in production; tests must not pass on a loop it
    # never uses (see pytest_asyncio_loop_factories in conftest.py).
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop), "router tests need uvloop"
    router = Router(config)
    task = asyncio.create_task(router.run())
    try:
        async with asyncio.timeout(15):
            await router.listening.wait()
            await router.watcher.ready.wait()
        if need_logs:
            await eventually_async(_true(lambda: router.shipper.connected), timeout=10)
        yield RunningRouter(router, task)
    finally:
        router.stop()
        try:
            async with asyncio.timeout(12):
                await task
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()


@contextlib.asynccontextmanager
async def demo_router(
    endpoint: str, prefix: str, dyno: Dyno, config: RouterConfig | None = None
) -> AsyncIterator[RunningRouter]:
    """App ``demo`` with ``dyno`` as its one web dyno, behind a started router."""
    async with routes(endpoint, prefix) as r:
        await r.app("demo")
        await r.dyno("demo", dyno)
        async with start_router(config or router_config(endpoint, prefix)) as rt:
            yield rt


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()

    return predicate


# -- a raw HTTP client -----------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""
    interim: list[int] = field(default_factory=list)


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Response:
    interim: list[int] = []
    while True:
        got = await read_head(reader)
        if got is None:
            raise ConnectionError("connection closed before a response")
        line, headers = got
        status = int(line.split(" ", 2)[1])
        if 100 <= status < 200 and status != 101:
            interim.append(status)
            continue
        break
    if head_only or status in (101, 204, 304):
        return Response(status, headers, b"", interim=interim)
    if "content-length" in headers or headers.get("transfer-encoding") == "chunked":
        body = await read_body(reader, headers)
    else:
        body = await reader.read()
    return Response(status, headers, body, interim=interim)


async def request(
    port: int,
    path: str = "/",
    *,
    app: str = "demo",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str | None = None,
) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        hdrs = {"Host": host or f"{app}.{BASE}", "Connection": "close"}
        if body or method in ("POST", "PUT"):
            hdrs["Content-Length"] = str(len(body))
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        writer.write(head.encode() + b"\r\n" + body)
        return await read_response(reader, head_only=method == "HEAD")
    finally:
        writer.close()


async def raw(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data``, return everything the router sends back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        chunks = []
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


# -- router log lines on NATS ----------------------------------------------------
class LogTap:
    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self._nc: nats.aio.client.Client | None = None

    async def start(self, nats_url: str, app: str) -> LogTap:
        self._nc = await secure.nats_connect(nats_url)

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            self.lines.extend(decode_batch(msg.data, msg.subject))

        await self._nc.subscribe(app_filter(app), cb=on_msg)
        await self._nc.flush()
        return self

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def wait_for(self, *fragments: str, timeout: float = 10.0) -> LogLine:
        async def found() -> LogLine | None:
            for line in self.lines:
                if all(f in line.message for f in fragments):
                    return line
            return None

        return await eventually_async(found, timeout=timeout)
