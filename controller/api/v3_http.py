"""The Heroku Platform API (v3) over HTTPS, beside the gRPC API.

Every request becomes PlatformService calls on this controller's own gRPC
API with the caller's token, so who may do what is decided in one place
(controller/core/access.py through controller/api/endpoint.py), never here.
What this module adds is Heroku's shape: JSON bodies with its field names
(controller/api/v3_shapes.py), ``Accept: application/vnd.heroku+json;
version=3``, its error body with the matching status, ``Range`` paging,
``Request-Id``, and ``RateLimit-Remaining`` from a per-token budget of 4500
requests an hour (Heroku's), refilled continuously.

Resources so far: account; apps (list, create, info, delete); config-vars
(info, update: ``null`` unsets); domains (list, create, info, delete);
releases (list, paged by version); formation (list, info, batch and single
update); dynos (list, info, restart, stop).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from controller.api import v3_shapes as shapes
from slipway import errors, http1
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.v1 import platform_pb2_grpc

log = slog.get("controller.v3")

RPC_DEADLINE = 15.0
RATE_PER_HOUR = 4500
MIB = 1024 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_JSON = "application/json"


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Budget:
    """Requests each token may still make: RATE_PER_HOUR, refilled continuously."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._left: dict[str, tuple[float, float]] = {}

    def take(self, token: str) -> int:
        """One request's worth; the requests left after it (-1: none was left)."""
        now = self.clock.monotonic()
        left, since = self._left.get(token, (float(RATE_PER_HOUR), now))
        left = min(float(RATE_PER_HOUR), left + (now - since) * RATE_PER_HOUR / 3600.0)
        if left < 1.0:
            self._left[token] = (left, now)
            return -1
        self._left[token] = (left - 1.0, now)
        if len(self._left) > 10_000:  # forget the idlest, not grow without end
            self._left.pop(next(iter(self._left)))
        return int(left - 1.0)


class ApiError(Exception):
    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_id, self.message = status, error_id, message


def _token(headers: dict[str, str]) -> str:
    """A Bearer token, or a Basic password (what git and the heroku CLI send)."""
    value = headers.get("authorization", "")
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    if scheme.lower() == "basic":
        pair = http1.parse_basic_auth(value)
        if pair is not None and pair[1]:
            return pair[1]
    raise ApiError(401, "unauthorized", "Invalid credentials provided.")


def _check_accept(headers: dict[str, str]) -> None:
    accept = headers.get("accept", "")
    if "application/vnd.heroku+json" not in accept:
        return  # any other client: JSON all the same
    version = re.search(r"version=([^;,\s]+)", accept)
    if version is None or not version.group(1).startswith("3"):
        raise ApiError(
            406,
            "not_acceptable",
            "Please specify a version along with Heroku's API MIME type: "
            "Accept: application/vnd.heroku+json; version=3",
        )


Handler = Callable[["Call"], Awaitable[Reply]]


@dataclass
class Call:
    """One request, as the resource handlers see it."""

    stub: platform_pb2_grpc.PlatformServiceStub
    token: str
    params: dict[str, str]
    body: dict[str, Any]
    headers: dict[str, str]

    async def rpc(self, method: str, request: Any) -> Any:
        metadata = (("authorization", f"Bearer {self.token}"),)
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=RPC_DEADLINE)

    def text(self, name: str) -> str:
        value = self.body.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ApiError(422, "invalid_params", f"{name} must be a string")
        return value


class PlatformV3:
    def __init__(
        self,
        listen: str,
        context: ssl.SSLContext | None,
        target: str,
        channel_credentials: grpc.ChannelCredentials | None,
        *,
        clock: Clock = SystemClock(),
    ) -> None:
        self.listen = listen
        self.context = context
        self.target = target
        self.channel_credentials = channel_credentials
        self.budget = Budget(clock)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), handler))

    async def start(self) -> None:
        if self.channel_credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        else:
            self._channel = grpc.aio.secure_channel(self.target, self.channel_credentials)
        host, _, port = self.listen.rpartition(":")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]") or "127.0.0.1", int(port), ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening", api="platform v3", listen=self.listen, port=self.port)

    async def run(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None and self._channel is not None
        try:
            async with self._server:
                await self._server.serve_forever()
        finally:
            await self._channel.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await http1.read_request(reader, timeout=60.0)
                except http1.HttpError as exc:
                    too_big = "too large" in str(exc)
                    reply = Reply(
                        413 if too_big else 400,
                        {"id": "request_too_large" if too_big else "bad_request",
                         "message": str(exc)},
                    )  # fmt: skip
                    writer.write(self._bytes(reply, str(uuid.uuid4()), close=True))
                    await writer.drain()
                    await _discard(reader)
                    return
                if request is None:
                    return
                request_id = request.headers.get("request-id", "")
                if not _REQUEST_ID.match(request_id):
                    request_id = str(uuid.uuid4())
                reply = await self.answer(request)
                close = request.headers.get("connection", "").lower() == "close"
                writer.write(self._bytes(reply, request_id, close=close))
                await writer.drain()
                if close:
                    return
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def _bytes(self, reply: Reply, request_id: str, *, close: bool) -> bytes:
        body = b"" if reply.body is None else json.dumps(reply.body).encode()
        reason = http1.reason(reply.status)
        headers = {
            "Content-Type": _JSON,
            "Content-Length": str(len(body)),
            "Request-Id": request_id,
            "Connection": "close" if close else "keep-alive",
            **reply.headers,
        }
        head = f"HTTP/1.1 {reply.status} {reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        return head.encode("latin-1") + b"\r\n" + body

    async def answer(self, request: http1.Request) -> Reply:
        remaining = ""
        try:
            path = request.path.partition("?")[0].rstrip("/") or "/"
            handler, params = self._match(request.method, path)
            _check_accept(request.headers)
            token = _token(request.headers)
            left = self.budget.take(token)
            if left < 0:
                raise ApiError(429, "rate_limit", "Your account reached the API rate limit.")
            remaining = str(left)
            body = _json_body(request) if request.method in ("POST", "PATCH", "PUT") else {}
            assert self._channel is not None
            stub = platform_pb2_grpc.PlatformServiceStub(self._channel)
            reply = await handler(Call(stub, token, params, body, request.headers))
        except ApiError as exc:
            reply = Reply(exc.status, {"id": exc.error_id, "message": exc.message})
        except errors.SlipwayError as exc:
            status, error_id = shapes.status_of_error(exc)
            reply = Reply(status, {"id": error_id, "message": exc.message})
        except grpc.aio.AioRpcError as exc:
            status, error_id = shapes.status_of(exc.code())
            reply = Reply(status, {"id": error_id, "message": exc.details() or str(exc.code())})
        except Exception:  # a bug: logged with its traceback, the client told so
            log.exception("platform api request failed", method=request.method, path=request.path)
            reply = Reply(
                500,
                {"id": "internal_server_error", "message": "An internal error occurred; see the "
                 "controller's log."},
            )  # fmt: skip
        if remaining:
            reply.headers["RateLimit-Remaining"] = remaining
        return reply

    def _match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for verb, regex, handler in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            if verb == method:
                return handler, match.groupdict()
            allowed = True
        if allowed:
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise ApiError(404, "not_found", f"The requested API endpoint was not found: {path}")


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read what the client is still sending after a refusal (a body too large,
    say), so closing does not reset the connection before it reads the answer;
    bounded in bytes and time."""
    left = 16 * MIB
    try:
        async with asyncio.timeout(2.0):
            while left > 0 and (chunk := await reader.read(65536)):
                left -= len(chunk)
    except (TimeoutError, OSError, ssl.SSLError):
        pass


def _json_body(request: http1.Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        value = json.loads(request.body)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"Invalid JSON in the request body: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "The request body must be a JSON object")
    return value


def page_reply(items: list[dict[str, Any]], call: Call, fields: tuple[str, ...]) -> Reply:
    """A listing, one page of it as the Range header asks (206 when more remain)."""
    wanted = shapes.parse_range(call.headers.get("range", ""), fields)
    chosen, next_range = shapes.page(items, wanted, lambda item: item[wanted.field])
    headers = {"Accept-Ranges": ", ".join(fields)}
    if next_range is not None:
        headers["Next-Range"] = next_range
    return Reply(206 if next_range else 200, chosen, headers)
