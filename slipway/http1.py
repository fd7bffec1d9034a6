"""A small HTTP/1.1 client and request reader on asyncio streams (httptools parses).

For the control plane's few HTTP conversations (add-on providers and their
callbacks): one request per connection, bodies bounded in size, a deadline on
the whole exchange. Not a general-purpose HTTP library.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from slipway import errors
from slipway import log as slog

_log = slog.get("http")

MAX_HEAD_BYTES = 32 * 1024
MAX_BODY_BYTES = 1024 * 1024


class HttpError(Exception):
    """The exchange failed before an answer was read (the message says how)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Collected:
    url: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    head_bytes: int = 0
    done: bool = False
    headers_complete: bool = False
    too_big: bool = False

    def on_headers_complete(self) -> None:
        self.headers_complete = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        key = name.decode("latin-1").lower()
        self.headers[key] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_BODY_BYTES:
            self.too_big = True
            return
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


async def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> Response:
    """One request; raises :class:`HttpError` when no complete answer arrives in time."""
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation.
        async with asyncio.timeout(timeout):
            return await _exchange(method, url, headers or {}, body, context)
    except TimeoutError:
        raise HttpError(f"{method} {_shown(url)}: no answer within {timeout:g} s") from None
    except (OSError, ssl.SSLError) as exc:
        raise HttpError(f"{method} {_shown(url)}: {exc}") from None


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"


async def _exchange(
    method: str, url: str, headers: dict[str, str], body: bytes, context: ssl.SSLContext | None
) -> Response:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(
        host, port, ssl=(context or ssl.create_default_context()) if secure else None
    )
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
        merged = {"Connection": "close", "Content-Length": str(len(body)), **headers}
        lines += [f"{k}: {v}" for k, v in merged.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        collected = _Collected()
        parser = httptools.HttpResponseParser(collected)
        while not collected.done:
            chunk = await reader.read(65536)
            if not chunk:
                # An answer without a length ends when the connection does.
                if not collected.headers_complete or "content-length" in collected.headers:
                    raise HttpError(f"{method} {_shown(url)}: connection closed mid-answer")
                break
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise HttpError(f"{method} {_shown(url)}: bad HTTP answer ({exc})") from None
            if collected.too_big or collected.head_bytes > MAX_HEAD_BYTES:
                raise HttpError(f"{method} {_shown(url)}: answer too large")
        return Response(parser.get_status_code(), collected.headers, bytes(collected.body))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def read_request(reader: asyncio.StreamReader, timeout: float = 30.0) -> Request | None:
    """The next request on a server connection (None: the client sent nothing)."""
    collected = _Collected()
    parser = httptools.HttpRequestParser(collected)

    async def read() -> Request | None:
        seen = False
        while not collected.done:
            chunk = await reader.read(65536)
            if not chunk:
                if not seen:
                    return None
                raise HttpError("connection closed mid-request")
            seen = True
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserUpgrade:
                raise HttpError("upgrades are not served") from None
            except httptools.HttpParserError as exc:
                raise HttpError(f"bad request ({exc})") from None
            if collected.too_big:
                raise HttpError("request body too large")
            if collected.head_bytes > MAX_HEAD_BYTES:
                raise HttpError("request head too large")
        return Request(
            parser.get_method().decode(),
            collected.url.decode("latin-1"),
            collected.headers,
            bytes(collected.body),
        )

    try:
        async with asyncio.timeout(timeout):
            return await read()
    except TimeoutError:
        raise HttpError("request not received in time") from None


def response_bytes(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def reason(status: int) -> str:
    return _REASONS.get(status, "Status")


def error_body(reason: str, message: str) -> bytes:
    """Heroku's error shape: {"id": reason, "message": sentence}."""
    return json.dumps({"id": reason, "message": message}).encode()


def status_of(exc: errors.SlipwayError) -> int:
    """The HTTP status of one of our errors."""
    if isinstance(exc, errors.InvalidArgument):
        return 422
    if isinstance(exc, errors.NotFound):
        return 404
    if isinstance(exc, errors.FailedPrecondition):
        return 409
    return 503 if isinstance(exc, errors.Unavailable) else 500


# (status, body) for JSON, or (status, body, content type).
Answer = tuple[int, bytes] | tuple[int, bytes, str]
Handler = Callable[[Request], Awaitable[Answer]]


class JsonServer:
    """A small HTTP/1.1 JSON API over TLS: one request per connection.

    Used by the add-on callback API and the built-in providers' partner API;
    ``handle`` answers (status, body) and never sees a malformed request.
    """

    def __init__(self, listen: str, context: ssl.SSLContext | None, handle: Handler) -> None:
        self.listen = listen
        self.context = context
        self._handler = handle
        self.port = 0
        self.label = "http api"  # in the log line of start
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind now (a caller may need the port before serving)."""
        host, _, port = self.listen.rpartition(":")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]") or "127.0.0.1", int(port), ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        _log.info("listening", api=self.label, listen=self.listen, port=self.port)

    async def run(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await read_request(reader)
            except HttpError as exc:
                writer.write(response_bytes(400, error_body("bad_request", str(exc))))
                return
            if request is None:
                return
            answer = await self._handler(request)
            content_type = answer[2] if len(answer) == 3 else "application/json"
            writer.write(response_bytes(answer[0], answer[1], content_type))
            await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()
