"""Heroku router error codes and the HTML pages the router answers with.

Each code has a description (used in the ``at=error code=H12 desc="..."``
log line), an HTTP status and, where telling the client when to come back
helps, a ``Retry-After`` in seconds. Pages are rendered once per code and
kept as ready-to-write bytes, so an error response costs no formatting.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class RouterError:
    code: str  # "H12"; "" for plain HTTP errors such as a 400 or "No such app"
    desc: str
    status: int
    reason: str
    title: str
    retry_after: int | None = None
    # Whether a log line says at=error (H codes) or at=info (plain 400/404).
    is_error: bool = True


H10 = RouterError("H10", "App crashed", 503, "Service Unavailable", "Application error", 10)
H11 = RouterError("H11", "Backlog too deep", 503, "Service Unavailable", "Application busy", 1)
H12 = RouterError("H12", "Request timeout", 503, "Service Unavailable", "Application error")
H13 = RouterError(
    "H13", "Connection closed without response", 503, "Service Unavailable", "Application error"
)
H14 = RouterError(
    "H14", "No web processes running", 503, "Service Unavailable", "Application error", 10
)
H15 = RouterError("H15", "Idle connection", 503, "Service Unavailable", "Application error")
H17 = RouterError(
    "H17", "Poorly formatted HTTP response", 503, "Service Unavailable", "Application error"
)
H18 = RouterError(
    "H18", "Server Request Interrupted", 503, "Service Unavailable", "Application error"
)
H19 = RouterError(
    "H19", "Backend connection timeout", 503, "Service Unavailable", "Application error", 5
)
H20 = RouterError("H20", "App boot timeout", 503, "Service Unavailable", "Application error", 10)
H21 = RouterError(
    "H21", "Backend connection refused", 503, "Service Unavailable", "Application error", 5
)
H25 = RouterError("H25", "HTTP Restriction", 400, "Bad Request", "Bad request")
H26 = RouterError("H26", "Request Error", 400, "Bad Request", "Bad request")
H27 = RouterError(
    "H27", "Client Request Interrupted", 499, "Client Closed Request", "Client closed request"
)
H28 = RouterError("H28", "Client Connection Idle", 408, "Request Timeout", "Request timeout")
H80 = RouterError(
    "H80", "Maintenance mode", 503, "Service Unavailable", "Offline for maintenance", 60
)
H81 = RouterError("H81", "Blank app", 503, "Service Unavailable", "Nothing deployed yet")
H99 = RouterError("H99", "Platform error", 503, "Service Unavailable", "Platform error", 5)
NO_SUCH_APP = RouterError("", "No such app", 404, "Not Found", "No such app", is_error=False)
BAD_REQUEST = RouterError("", "Bad request", 400, "Bad Request", "Bad request", is_error=False)
# Oversized heads are plain 400s, as on Heroku (not 414/431).
HEADER_TOO_LARGE = RouterError(
    "", "Request header too large", 400, "Bad Request", "Request header too large", is_error=False
)
URI_TOO_LONG = RouterError(
    "", "Request line too long", 400, "Bad Request", "Request line too long", is_error=False
)
NOT_IMPLEMENTED = RouterError(
    "", "Transfer coding not supported", 501, "Not Implemented", "Not implemented", is_error=False
)

_BODY_TEXT = {
    "H10": "The application crashed. If you own it, check its logs.",
    "H11": "The application is receiving more requests than it can answer. Try again shortly.",
    "H12": "The application did not answer in time.",
    "H13": "The application closed the connection without answering.",
    "H14": "No web dynos are running for this application.",
    "H15": "The application stopped sending its answer.",
    "H17": "The application sent a malformed answer.",
    "H18": "The application interrupted the request.",
    "H19": "The application could not be reached in time.",
    "H20": "The application did not finish starting in time.",
    "H21": "The application refused the connection.",
    "H80": "This application is down for maintenance. Please check back soon.",
    "H81": "Nothing has been deployed to this application yet.",
    "H99": "The platform could not route this request. Please try again shortly.",
}


def render_page(err: RouterError) -> bytes:
    text = _BODY_TEXT.get(err.code, err.desc + ".")
    code_line = f'<p class="code">{err.code}</p>' if err.code else ""
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(err.title)}</title>"
        "<style>body{font-family:sans-serif;margin:4em auto;max-width:36em;color:#333}"
        ".code{color:#999}</style></head>\n"
        f"<body><h1>{html.escape(err.title)}</h1><p>{html.escape(text)}</p>{code_line}"
        "</body></html>\n"
    )
    return page.encode()


def render_response(err: RouterError, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """The whole HTTP/1.1 response for ``err``."""
    body = render_page(err)
    lines = [
        f"HTTP/1.1 {err.status} {err.reason}",
        "Content-Type: text/html; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-cache, no-store",
    ]
    if err.retry_after is not None:
        lines.append(f"Retry-After: {err.retry_after}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if head_only else head + body


class ResponseCache:
    """Rendered responses by (error, keep_alive, head_only)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, bool, bool], bytes] = {}

    def get(self, err: RouterError, keep_alive: bool, head_only: bool = False) -> bytes:
        key = (err.code or err.desc, err.status, keep_alive, head_only)
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = render_response(
                err, keep_alive=keep_alive, head_only=head_only
            )
        return got
