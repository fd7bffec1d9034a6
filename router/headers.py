"""Header rules: what is stripped, what is added, what is refused.

Pure functions over raw ``(name, value)`` byte pairs as the parser delivers
them, so the rules are unit-tested without sockets. llhttp (inside httptools)
already refuses the classic smuggling shapes (Content-Length with
Transfer-Encoding, duplicate Content-Length, invalid chunk sizes, obs-fold);
:func:`check_request` adds what it lets through.
"""

from __future__ import annotations

import os
import re

# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones the router re-frames itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Added by the router; a client's own copies are dropped (X-Forwarded-For is
# the exception: it is appended to).
ROUTER_SET = frozenset(
    {
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-request-start",
        b"x-request-id",
        b"via",
        b"x-forwarded-for",
    }
)
DROP_REQUEST = HOP_BY_HOP | ROUTER_SET
DROP_RESPONSE = HOP_BY_HOP | {b"content-length"}

# Heroku accepts 20-200 characters of letters, digits, "+", "/", "=" and "-".
_REQUEST_ID = re.compile(rb"[A-Za-z0-9+/=\-]{20,200}")
VIA = b"1.1 slipway"


class BadRequest(Exception):
    """The request must be answered with a 4xx/5xx before any dyno sees it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def host_name(value: bytes) -> str:
    """``b"App.Example.com:8080"`` -> ``"app.example.com"``."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):  # IPv6 literal
        return text.partition("]")[0] + "]"
    return text.partition(":")[0].rstrip(".")


def request_id(client_value: bytes | None) -> bytes:
    """The client's X-Request-Id when it is valid and at most 200 chars, else a UUID4."""
    if client_value is not None and _REQUEST_ID.fullmatch(client_value):
        return client_value
    return new_uuid4()


_random = bytearray()


def new_uuid4() -> bytes:
    """A random (version 4) UUID in its text form. Runs once per request, so
    random bytes are fetched 4 KB at a time instead of one syscall per id."""
    global _random
    if len(_random) < 16:
        _random = bytearray(os.urandom(4096))
    raw = _random[-16:]
    del _random[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


def forwarded_for(existing: list[bytes], peer: str) -> bytes:
    """Appends the client's address to whatever X-Forwarded-For it sent."""
    parts = [v.strip() for v in existing if v.strip()]
    parts.append(peer.encode())
    return b", ".join(parts)


class RequestInfo:
    """What the router needs to know of a request's headers, gathered in one pass."""

    __slots__ = (
        "chunked",
        "drop",
        "expect_continue",
        "forwarded_for",
        "has_body",
        "host",
        "request_id",
        "upgrade",
    )

    def __init__(self) -> None:
        self.host: bytes | None = None
        self.request_id: bytes | None = None
        self.forwarded_for: list[bytes] = []
        self.drop: set[bytes] = set()  # extra names listed in Connection
        self.chunked = False
        self.has_body = False
        self.expect_continue = False
        self.upgrade: bytes | None = None


_SPECIAL = frozenset(
    {
        b"host",
        b"x-request-id",
        b"x-forwarded-for",
        b"connection",
        b"transfer-encoding",
        b"content-length",
        b"expect",
        b"upgrade",
    }
)


def analyse(headers: list[tuple[bytes, bytes]]) -> RequestInfo:
    """One pass over the request headers; raises :class:`BadRequest` for what
    llhttp lets through but a proxy must refuse:

    - a Transfer-Encoding other than exactly ``chunked``: the router re-frames
      bodies, so forwarding ``gzip, chunked`` would silently change meaning;
    - more than one Host header (RFC 9112 3.2), or a malformed one.
    """
    info = RequestInfo()
    for name, value in headers:
        lname = name.lower()
        if lname not in _SPECIAL:
            continue
        if lname == b"host":
            if info.host is not None:
                raise BadRequest("more than one Host header")
            if not value or b" " in value or b"\t" in value or b"," in value:
                raise BadRequest("malformed Host header")
            info.host = value
        elif lname == b"x-request-id":
            info.request_id = value
        elif lname == b"x-forwarded-for":
            info.forwarded_for.append(value)
        elif lname == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token and token not in (b"close", b"keep-alive", b"upgrade"):
                    info.drop.add(token)
        elif lname == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise BadRequest("unsupported transfer-encoding", 501)
            info.chunked = info.has_body = True
        elif lname == b"content-length":
            info.has_body = value.strip() not in (b"0", b"")
        elif lname == b"expect":
            if value.strip().lower() == b"100-continue":
                info.expect_continue = True
        elif lname == b"upgrade":
            info.upgrade = value
    return info


def request_head(
    method: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    info: RequestInfo,
    added: list[bytes],
    *,
    upgrade: bool,
) -> bytes:
    """The request head sent to the dyno: always HTTP/1.1, hop-by-hop stripped,
    the router's own headers (``added``: ready ``b"Name: value"`` lines) appended."""
    drop = info.drop
    out = [method, b" ", url, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lname = name.lower()
        if lname in DROP_REQUEST or (drop and lname in drop):
            continue
        out += (name, b": ", value, b"\r\n")
    for line in added:
        out += (line, b"\r\n")
    if info.chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade and info.upgrade is not None:
        out += (b"Connection: Upgrade\r\nUpgrade: ", info.upgrade, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def response_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Extra hop-by-hop names a response lists in its Connection header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens -= {b"", b"close", b"keep-alive", b"upgrade"}
    return tokens
