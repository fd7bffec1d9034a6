"""The client side of the router: one asyncio.Protocol per client connection.

A :class:`ClientProtocol` parses requests with httptools (llhttp) and turns
each into an :class:`Exchange` (see ``router/exchange.py``), which routes it
to a dyno and relays the response. Requests on one connection are answered
in order; pipelined ones wait in ``queue`` (``queue[0]`` is the active one).

Nothing touches a dyno until a request's head has been parsed *and* the
bytes received with it parsed cleanly: an exchange is started only after
``feed_data`` returns, so a smuggling probe sent in one packet (bad chunk
size, CL+TE, obs-fold...) is refused with a 400 before any connection is made.

Reading from the client is paused for any of a few reasons at once (a bit
each in ``pause_reasons``): the dyno is not taking bytes as fast as the
client sends them, body bytes are piling up before the dyno is connected,
pipelined requests are waiting, or an Upgrade waits for the dyno's answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from router import errors_page as pages
from router.errors_page import RouterError
from router.exchange import Exchange
from router.headers import VIA, BadRequest

if TYPE_CHECKING:
    from router.exchange import Shared
    from router.upstream import UpstreamConnection

from router.flow import (
    BACKLOG,
    BOOTING,
    CLIENT_BODY,
    FIRST_BYTE,
    IDLE,
    KEEPALIVE,
    NONE,
    PAUSE_BUFFER,
    PAUSE_QUEUE,
    PAUSE_UPGRADE,
    PAUSE_UPSTREAM_FULL,
    TUNNEL,
)

_INF = float("inf")
_MAX_PIPELINED = 8


class ClientProtocol(asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.loop = shared.loop
        self.transport: asyncio.Transport | None = None
        self.peer_ip = "unknown"
        self.local_port = b"80"
        self.fixed_headers = b""
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = True
        # Raw bytes received while a head is incomplete (bounds what llhttp
        # buffers for one endless header), and the exact size of parsed headers.
        self.head_bytes = 0
        self.head_size = 0
        self.start_pending = False
        self.starting = False
        self.pause_reasons = 0
        self.write_blocked = False
        self.tunnel: UpstreamConnection | None = None
        self.upgrade_tail: bytes | None = None
        self.pending_error: RouterError | None = None
        self.input_closed = False  # stop parsing: bad input, or upgrade pending
        self.eof = False
        self.closed = False
        self.deadline = _INF
        self.deadline_kind = KEEPALIVE

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0]
        sock = transport.get_extra_info("sockname")
        if sock:
            self.local_port = str(sock[1]).encode()
        shared = self.shared
        # The same for every request on this connection: built once.
        self.fixed_headers = b"X-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\nVia: %s" % (
            shared.proto.encode(),
            self.local_port,
            VIA,
        )
        shared.clients.add(self)
        shared.metrics.connections_active += 1
        shared.metrics.connections_total += 1
        self.deadline = self.loop.time() + shared.limits.client_keepalive_timeout

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            if tunnel.transport is not None:
                tunnel.transport.write(data)
            self.deadline = self.loop.time() + self.shared.limits.idle_timeout
            return
        if self.input_closed:
            return
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrade_requested(data[exc.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self.bad_request(cause.error if isinstance(cause, _HeadTooLarge) else pages.BAD_REQUEST)
        except httptools.HttpParserError:
            self.bad_request(pages.BAD_REQUEST)
        else:
            if self.in_head and self.head_bytes > self.shared.limits.max_head_bytes:
                self.bad_request(pages.HEADER_TOO_LARGE)
        # Requests parsed cleanly before any bad bytes are still answered.
        if self.start_pending:
            self.start_pending = False
            self.start_next()

    def eof_received(self) -> bool:
        # Like nginx, a client's FIN counts as the client going away (H27 for a
        # request in flight): a half-close cannot be told apart from a close,
        # and waiting on a dyno for a client that has left wastes its slot.
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        shared = self.shared
        shared.clients.discard(self)
        shared.metrics.connections_active -= 1
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        queue = self.queue
        while queue:
            queue.popleft().client_gone()

    def pause_writing(self) -> None:
        # The client reads slower than the dyno sends: stop reading the dyno.
        self.write_blocked = True
        upstream = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        upstream = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if upstream is not None:
            upstream.resume_reading()

    # -- httptools request callbacks ------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self.head_size = 0
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.shared.limits.max_line_bytes:
            raise _HeadTooLarge(pages.URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        limits = self.shared.limits
        if size > limits.max_line_bytes:
            raise _HeadTooLarge(pages.HEADER_TOO_LARGE)
        self.head_size += size + 4
        if self.head_size > limits.max_head_bytes:
            raise _HeadTooLarge(pages.HEADER_TOO_LARGE)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.in_head = False
        exchange = Exchange(
            self,
            parser.get_method(),
            self.url,
            self.headers,
            parser.get_http_version(),
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        self.parsing = exchange
        queue = self.queue
        queue.append(exchange)
        if len(queue) == 1:
            self.start_pending = True
        elif len(queue) >= _MAX_PIPELINED:
            self.pause(PAUSE_QUEUE)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if exchange is not None:
            exchange.request_complete()

    # -- flow control -------------------------------------------------------
    def pause(self, reason: int) -> None:
        if not self.pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self.pause_reasons |= reason

    def unpause(self, reason: int) -> None:
        if not self.pause_reasons & reason:
            return
        self.pause_reasons &= ~reason
        if not self.pause_reasons and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- exchanges ----------------------------------------------------------
    def start_next(self) -> None:
        """Start queued exchanges in order until one goes asynchronous."""
        if self.starting:
            return
        self.starting = True
        try:
            queue = self.queue
            while queue and not self.closed:
                exchange = queue[0]
                if exchange.state != 0:  # already running
                    break
                exchange.start()
                if queue and queue[0] is exchange:
                    break  # it is waiting on a dyno; resumes by callbacks
        finally:
            self.starting = False

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        if self.closed:
            return
        if not keep_alive or (self.eof and not queue):
            if exchange.refused:
                self.linger_close()
            else:
                self.close()
            return
        if len(queue) < _MAX_PIPELINED:
            self.unpause(PAUSE_QUEUE)
        if not queue:
            if self.pending_error is not None:
                self.write_error_and_close(self.pending_error)
                return
            self.deadline = self.loop.time() + self.shared.limits.client_keepalive_timeout
            self.deadline_kind = KEEPALIVE
        if not self.starting:
            self.start_next()

    def upgrade_requested(self, tail: bytes) -> None:
        """llhttp saw a complete Upgrade request; what follows belongs to the tunnel."""
        self.input_closed = True
        self.upgrade_tail = tail
        self.pause(PAUSE_UPGRADE)
        if self.start_pending:
            self.start_pending = False
            self.start_next()

    def start_tunnel(self, upstream: UpstreamConnection) -> None:
        self.tunnel = upstream
        self.deadline = self.loop.time() + self.shared.limits.idle_timeout
        self.deadline_kind = TUNNEL
        tail, self.upgrade_tail = self.upgrade_tail, None
        if tail and upstream.transport is not None:
            upstream.transport.write(tail)
        self.unpause(PAUSE_UPGRADE)
        self.unpause(PAUSE_BUFFER)
        self.unpause(PAUSE_UPSTREAM_FULL)

    # -- errors and closing -------------------------------------------------
    def bad_request(self, error: RouterError) -> None:
        """Unparseable or refused input: answer 400 once earlier requests are done."""
        self.shared.metrics.bad_requests += 1
        self.input_closed = True
        self.pause(PAUSE_QUEUE)
        bad = self.parsing
        self.parsing = None
        queue = self.queue
        if bad is not None and bad.state != 0:
            bad.refused = True
            bad.fail(error)  # already talking to a dyno (bad chunk mid-body)
            return
        if bad is not None and bad in queue:
            queue.remove(bad)
        if queue:
            self.pending_error = error
        else:
            self.write_error_and_close(error)

    def write_error_and_close(self, error: RouterError) -> None:
        self.shared.metrics.request(error.status, error.code)
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(self.shared.pages.get(error, keep_alive=False))
        self.linger_close()

    def linger_close(self) -> None:
        """Closing with unread input makes the kernel send a RST, which can
        destroy a 400 before the client reads it. Send FIN, then read and
        discard (input_closed) for a moment before closing."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self.input_closed = True
        if transport.can_write_eof():
            transport.write_eof()
        self.deadline = self.loop.time() + 2.0
        self.deadline_kind = KEEPALIVE
        self.pause_reasons = 0
        transport.resume_reading()

    def close(self) -> None:
        self.deadline = _INF
        if self.transport is not None and not self.closed:
            self.transport.close()

    def on_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        self.deadline = _INF
        self.deadline_kind = NONE
        exchange = self.queue[0] if self.queue else None
        if kind == KEEPALIVE and exchange is not None and exchange.state != 0:
            # A request started meanwhile; routing and connecting are bounded
            # by their own timeouts and set the next deadline.
            return
        if kind == KEEPALIVE or kind == TUNNEL or exchange is None:
            self.close()
        elif kind == BACKLOG or kind == FIRST_BYTE:
            exchange.fail(pages.H12)
        elif kind == BOOTING:
            exchange.fail(pages.H20)
        elif kind == CLIENT_BODY:
            exchange.fail(pages.H28)
        elif kind == IDLE:
            exchange.fail(pages.H28 if self.write_blocked else pages.H15)


class _HeadTooLarge(BadRequest):
    def __init__(self, error: RouterError) -> None:
        super().__init__(error.desc)
        self.error = error
