"""One request and its response: routing, connecting, relaying, timing, logging.

States (``Exchange.state``)::

    NEW -> ROUTING -> [BOOTING] -> [BACKLOG] -> CONNECTING -> SENT -> (response relayed) -> DONE
                                                  |  ^                  \\-> TUNNEL (101)
                                   refused/timeout: quarantine, next dyno

BOOTING: the app wants web dynos but none is up yet; the request waits for
a route table change that brings one (``Shared.boot_waiters``), up to
``boot_timeout``, then H20.

The exchange is the callback object of the dyno connection's response parser
(``on_status`` ... ``on_message_complete``) and is driven by the client
protocol for the request side (``request_body``, ``request_complete``).
Callbacks never finish the exchange while a parser is inside ``feed_data``:
they set flags, and the protocol finishes once ``feed_data`` has returned.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from router import errors_page as pages
from router import flow
from router.balancer import Balancer
from router.config import Limits
from router.errors_page import ResponseCache, RouterError
from router.headers import (
    DROP_RESPONSE,
    VIA,
    BadRequest,
    RequestInfo,
    analyse,
    forwarded_for,
    request_head,
    request_id,
    response_tokens,
)
from router.logs import LogShipper, format_line
from router.metrics import Metrics
from router.table import AppRoute, DynoRoute, RouteTable
from router.upstream import UpstreamConnection, UpstreamPool
from slipway import log

if TYPE_CHECKING:
    from router.proxy import ClientProtocol

logger = log.get(__name__)

NEW, ROUTING, BOOTING, BACKLOG, CONNECTING, SENT, TUNNEL, DONE = range(8)
# How the response body is framed towards the client.
BODY_NONE, BODY_RAW, BODY_CHUNKED = range(3)

_EMPTY: frozenset[str] = frozenset()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})


class Shared:
    """Everything connections share; built once per router worker."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        table: RouteTable,
        balancer: Balancer,
        pool: UpstreamPool,
        shipper: LogShipper,
        metrics: Metrics,
        proto: str = "http",
    ) -> None:
        self.loop = loop
        self.limits = limits
        self.table = table
        self.balancer = balancer
        self.pool = pool
        self.shipper = shipper
        self.metrics = metrics
        self.proto = proto
        self.pages = ResponseCache()
        self.clients: set[ClientProtocol] = set()
        # Requests held while their app's web dynos boot; woken by any table change.
        self.boot_waiters: set[Exchange] = set()
        table.listeners.append(self._table_changed)

    def _table_changed(self) -> None:
        if not self.boot_waiters:
            return
        waiting, self.boot_waiters = self.boot_waiters, set()
        for exchange in waiting:
            self.loop.call_soon(exchange.reroute)


class Exchange:
    __slots__ = (
        "app",
        "attempts",
        "body_buf",
        "body_buffered",
        "body_sent",
        "bytes_out",
        "client",
        "client_keep",
        "connect_task",
        "dyno",
        "dyno_counted",
        "fwd",
        "headers",
        "host",
        "http10",
        "info",
        "interim",
        "keep_alive",
        "method",
        "mode",
        "out",
        "reason",
        "refused",
        "request_done",
        "request_id",
        "resp_headers",
        "response_done",
        "response_started",
        "retried",
        "reused",
        "shared",
        "state",
        "status",
        "t_sent",
        "t_start",
        "tried",
        "until_close",
        "upgrade",
        "upstream",
        "upstream_keep",
        "url",
        "version",
        "waiting",
    )

    def __init__(
        self,
        client: ClientProtocol,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        version: str,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.client = client
        self.shared = client.shared
        self.method = method
        self.url = url
        self.headers = headers
        self.version = version
        self.http10 = version == "1.0"
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.state = NEW
        self.t_start = client.loop.time()
        self.t_sent = 0.0
        self.info: RequestInfo | None = None
        self.app: AppRoute | None = None
        self.host = ""
        self.request_id = b""
        self.dyno: DynoRoute | None = None
        self.dyno_counted = False
        self.upstream: UpstreamConnection | None = None
        self.upstream_keep = False
        self.connect_task: asyncio.Task[None] | None = None
        self.waiting = False
        self.tried: set[str] | None = None
        self.attempts = 0
        self.reused = False
        self.retried = False
        self.body_buf: list[bytes] = []
        self.body_buffered = 0
        self.body_sent = 0
        self.request_done = False
        self.resp_headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.status = 0
        self.interim = False
        self.response_started = False
        self.response_done = False
        self.until_close = False
        self.mode = BODY_NONE
        self.client_keep = keep_alive
        self.bytes_out = 0
        self.refused = False  # answered 4xx without reading its body: linger on close
        # Client-bound bytes produced while parsing one read from the dyno,
        # written with one writelines() after the parser returns: a small
        # response then costs one write syscall instead of two or three.
        self.out: list[bytes] = []
        self.fwd = b""

    # == routing ==============================================================
    def start(self) -> None:
        self.state = ROUTING
        shared = self.shared
        try:
            info = self.info = analyse(self.headers)
        except BadRequest as exc:
            self.keep_alive = False  # never trust the framing of a refused request
            self.refused = True
            self.fail(pages.NOT_IMPLEMENTED if exc.status == 501 else pages.BAD_REQUEST)
            return
        if self.method == b"CONNECT":
            self.keep_alive = False
            self.refused = True
            self.fail(pages.BAD_REQUEST)  # a router, not a forward proxy
            return
        table = shared.table
        if not table.loaded:
            self.fail(pages.H99)  # no route table yet: never guess
            return
        app = None
        if info.host is not None:
            name, self.host = table.lookup(info.host)
            if name is not None:
                app = table.apps.get(name)
        if app is None:
            self.fail(pages.NO_SUCH_APP)
            return
        self.app = app
        self.request_id = request_id(info.request_id)
        self.fwd = forwarded_for(info.forwarded_for, self.client.peer_ip)
        error = shared.balancer.admission(app, table.dyno_list.get(app.name, ()))
        if error is not None:
            self.fail(error)
            return
        self.route()

    def route(self) -> None:
        app = self.app
        assert app is not None
        shared = self.shared
        dynos = shared.table.dyno_list.get(app.name, ())
        if not dynos:
            if self.state != BOOTING:
                self.state = BOOTING
                self.set_deadline(flow.BOOTING, shared.limits.boot_timeout)
            shared.boot_waiters.add(self)
            return
        if self.state == BOOTING:
            # A dyno came up: the boot hold is over; connecting has its own clock.
            self.state = ROUTING
            self.client.deadline = float("inf")
            self.client.deadline_kind = flow.NONE
        choice = shared.balancer.choose(app, dynos, self.tried or _EMPTY)
        if choice is None:
            # Every usable dyno is at its in-flight limit: wait in the backlog
            # (the 30 s H12 clock includes the wait, as on Heroku).
            if self.state != BACKLOG:
                self.state = BACKLOG
                self.set_deadline(flow.BACKLOG, shared.limits.first_byte_timeout)
            self.waiting = True
            shared.balancer.wait(app.name, self.wake)
            return
        if isinstance(choice, RouterError):
            self.fail(choice)
            return
        self.dyno = choice
        self.dyno_counted = True
        shared.balancer.start(choice)
        conn = shared.pool.get(choice.address, self.client.loop.time())
        if conn is not None:
            self.reused = True
            shared.metrics.upstream_reuses += 1
            self.send_head(conn)
        else:
            self.connect()

    def reroute(self) -> None:
        """The route table changed while held for a boot: look at the app again."""
        if self.state != BOOTING:
            return
        app = self.shared.table.apps.get(self.app.name) if self.app is not None else None
        if app is None:
            self.fail(pages.NO_SUCH_APP)
            return
        self.app = app
        error = self.shared.balancer.admission(app, self.shared.table.dyno_list.get(app.name, ()))
        if error is not None:
            self.fail(error)
            return
        self.route()

    def wake(self) -> None:
        """A dyno slot was freed: try routing again (soon, not re-entrantly)."""
        self.waiting = False
        self.client.loop.call_soon(self._rewake)

    def _rewake(self) -> None:
        if self.state == BACKLOG:
            self.route()

    def connect(self) -> None:
        self.state = CONNECTING
        dyno = self.dyno
        assert dyno is not None
        self.connect_task = self.client.loop.create_task(self._connect(dyno))

    async def _connect(self, dyno: DynoRoute) -> None:
        shared = self.shared
        error: RouterError | None = None
        try:
            conn = await shared.pool.connect(dyno.host, dyno.port, shared.limits.connect_timeout)
        except TimeoutError:
            error = pages.H19
        except OSError:
            error = pages.H21
        self.connect_task = None
        if error is not None:
            self.connect_failed(dyno, error)
            return
        if self.state != CONNECTING:
            conn.close()  # the client left while we were connecting
            return
        shared.metrics.upstream_connects += 1
        self.send_head(conn)

    def connect_failed(self, dyno: DynoRoute, error: RouterError) -> None:
        """No byte reached the dyno, so another dyno may safely be tried."""
        if self.state != CONNECTING:
            return
        shared = self.shared
        self.release_dyno()
        shared.balancer.quarantine(dyno.address)
        logger.warning(
            "dyno quarantined", app=dyno.app, dyno=dyno.name, code=error.code, address=dyno.address
        )
        if self.tried is None:
            self.tried = set()
        self.tried.add(dyno.address)
        self.attempts += 1
        if self.attempts >= shared.limits.max_attempts:
            self.fail(error)
            return
        self.state = ROUTING
        self.route()

    def release_dyno(self) -> None:
        if self.dyno_counted and self.dyno is not None:
            self.dyno_counted = False
            self.shared.balancer.finish(self.dyno)

    # == request to the dyno =================================================
    def send_head(self, conn: UpstreamConnection) -> None:
        client = self.client
        info = self.info
        assert info is not None and conn.transport is not None
        self.upstream = conn
        conn.attach(self)
        self.state = SENT
        now = client.loop.time()
        self.t_sent = now
        if client.write_blocked:
            conn.pause_reading()
        shared = self.shared
        added = [
            b"X-Forwarded-For: " + self.fwd,
            b"X-Request-Start: %d" % int(time.time() * 1000),
            b"X-Request-Id: " + self.request_id,
            client.fixed_headers,  # X-Forwarded-Proto, X-Forwarded-Port, Via
        ]
        head = request_head(self.method, self.url, self.headers, info, added, upgrade=self.upgrade)
        if self.body_buf:
            parts = [head]
            for chunk in self.body_buf:
                parts += self.frame(chunk)
                self.body_sent += len(chunk)
            self.body_buf = []
            self.body_buffered = 0
            if self.request_done and info.chunked:
                parts.append(_LAST_CHUNK)
            conn.transport.write(b"".join(parts))
            client.unpause(flow.PAUSE_BUFFER)
        else:
            if self.request_done and info.chunked:
                head += _LAST_CHUNK
            conn.transport.write(head)
        if self.request_done:
            self.set_deadline(flow.FIRST_BYTE, shared.limits.first_byte_timeout)
        else:
            self.set_deadline(flow.CLIENT_BODY, shared.limits.idle_timeout)

    def frame(self, chunk: bytes) -> list[bytes]:
        assert self.info is not None
        if self.info.chunked:
            return [b"%x\r\n" % len(chunk), chunk, _CRLF]
        return [chunk]

    def request_body(self, chunk: bytes) -> None:
        if not chunk:
            return
        state = self.state
        if state == SENT:
            upstream = self.upstream
            if upstream is None or upstream.transport is None:
                return
            assert self.info is not None
            if self.info.chunked:
                upstream.transport.writelines((b"%x\r\n" % len(chunk), chunk, _CRLF))
            else:
                upstream.transport.write(chunk)
            self.body_sent += len(chunk)
            if not self.response_started:
                self.set_deadline(flow.CLIENT_BODY, self.shared.limits.idle_timeout)
        elif state < SENT:
            # Not connected yet (or not started): keep it, up to a bound.
            self.body_buf.append(chunk)
            self.body_buffered += len(chunk)
            if self.body_buffered > self.shared.limits.max_buffered_body:
                self.client.pause(flow.PAUSE_BUFFER)
        # after DONE: the answer was already given; the rest of the body is dropped

    def request_complete(self) -> None:
        self.request_done = True
        if self.state == SENT:
            upstream = self.upstream
            if (
                self.info is not None
                and self.info.chunked
                and upstream is not None
                and upstream.transport is not None
            ):
                upstream.transport.write(_LAST_CHUNK)
            if not self.response_started:
                self.set_deadline(flow.FIRST_BYTE, self.shared.limits.first_byte_timeout)

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause(flow.PAUSE_UPSTREAM_FULL)
        else:
            self.client.unpause(flow.PAUSE_UPSTREAM_FULL)

    def set_deadline(self, kind: int, seconds: float) -> None:
        client = self.client
        client.deadline = client.loop.time() + seconds
        client.deadline_kind = kind

    # == response parser callbacks (httptools) ================================
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.resp_headers.append((name, value))

    def on_headers_complete(self) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        parser = upstream.parser
        status = parser.get_status_code()
        client = self.client
        transport = client.transport
        if 100 <= status < 200 and status != 101:
            # Interim response: relay 100 Continue to a client that asked for it.
            self.interim = True
            if (
                status == 100
                and self.info is not None
                and self.info.expect_continue
                and not self.http10
                and transport is not None
            ):
                transport.write(_CONTINUE)
            self.resp_headers = []
            self.reason = b""
            return
        self.status = status
        self.response_started = True
        self.upstream_keep = parser.should_keep_alive()
        headers = self.resp_headers
        out = [b"HTTP/1.1 %d " % status, self.reason, _CRLF]
        length = None
        chunked = False
        listed = False  # a Connection header may name more hop-by-hop headers
        for name, value in headers:
            lname = name.lower()
            if lname in DROP_RESPONSE:
                if lname == b"content-length":
                    length = value
                elif lname == b"transfer-encoding":
                    chunked = True
                elif lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                    listed = True
                elif status == 101 and lname == b"upgrade":
                    out += (name, b": ", value, _CRLF)
                continue
            out += (name, b": ", value, _CRLF)
        if listed:
            tokens = response_tokens(headers)
            if tokens:  # rare: rebuild without the listed names
                out = out[:3]
                for name, value in headers:
                    lname = name.lower()
                    if (lname not in DROP_RESPONSE and lname not in tokens) or (
                        status == 101 and lname == b"upgrade"
                    ):
                        out += (name, b": ", value, _CRLF)
        if status == 101:
            out.append(b"Connection: Upgrade\r\n")
        elif self.method == b"HEAD" or status == 204 or status == 304:
            if length is not None:
                out += (b"Content-Length: ", length, _CRLF)
            self.mode = BODY_NONE
            self.response_done = True  # no body follows, whatever the headers say
        elif length is not None:
            out += (b"Content-Length: ", length, _CRLF)
            self.mode = BODY_RAW
        else:
            self.until_close = not chunked
            if self.http10:
                self.mode = BODY_RAW
                self.client_keep = False  # HTTP/1.0 has no chunking: end by closing
            else:
                self.mode = BODY_CHUNKED
                out.append(b"Transfer-Encoding: chunked\r\n")
        if self.upgrade and status != 101:
            self.client_keep = False  # the client parser is already in upgrade mode
        if status != 101:
            if self.http10:
                out.append(
                    b"Connection: keep-alive\r\n" if self.client_keep else b"Connection: close\r\n"
                )
            elif not self.client_keep:
                out.append(b"Connection: close\r\n")
        out += (b"Via: ", VIA, b"\r\n\r\n")
        head = b"".join(out)
        self.bytes_out += len(head)
        self.out.append(head)

    def on_body(self, body: bytes) -> None:
        mode = self.mode
        if mode == BODY_NONE:
            return
        if mode == BODY_CHUNKED:
            self.out += (b"%x\r\n" % len(body), body, _CRLF)
        else:
            self.out.append(body)
        self.bytes_out += len(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.response_done = True

    def flush(self) -> None:
        """Write what the last read from the dyno produced (see ``out``) and
        restart the idle window."""
        out = self.out
        client = self.client
        if out:
            self.out = []
            transport = client.transport
            if transport is not None and not client.closed:
                if len(out) == 1:
                    transport.write(out[0])
                else:
                    transport.writelines(out)
        if self.response_started and self.state == SENT:
            client.deadline = client.loop.time() + self.shared.limits.idle_timeout
            client.deadline_kind = flow.IDLE

    # == finishing ============================================================
    def finish_response(self) -> None:
        """The dyno's response is complete (called outside the parser)."""
        if self.state == DONE:
            return
        if self.mode == BODY_CHUNKED:
            self.out.append(_LAST_CHUNK)
            self.bytes_out += 5
        self.flush()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            if (
                self.upstream_keep
                and self.request_done
                and not self.upgrade
                and not self.until_close
            ):
                self.shared.pool.put(conn, self.client.loop.time())
            else:
                conn.close()
        self.complete(self.status, None, self.client_keep and self.request_done)

    def complete(self, status: int, error: RouterError | None, keep_alive: bool) -> None:
        self.state = DONE
        self.release_dyno()
        client = self.client
        if client.pause_reasons & (flow.PAUSE_UPSTREAM_FULL | flow.PAUSE_BUFFER):
            # Those pauses were this exchange's; the next one starts unpaused.
            client.unpause(flow.PAUSE_UPSTREAM_FULL)
            client.unpause(flow.PAUSE_BUFFER)
        self.log(status, error)
        client.exchange_done(self, keep_alive)

    def log(self, status: int, error: RouterError | None) -> None:
        """Count the request and queue its Heroku-format line for the app's log."""
        shared = self.shared
        shared.metrics.request(status, error.code if error is not None else "")
        app = self.app
        if app is None:
            return  # no app, no app log (unknown host, refused request)
        now = self.client.loop.time()
        if self.t_sent:
            connect_ms = int((self.t_sent - self.t_start) * 1000)
            service_ms = int((now - self.t_sent) * 1000)
            dyno = self.dyno.name if self.dyno is not None else ""
        else:
            connect_ms, service_ms, dyno = 0, int((now - self.t_start) * 1000), ""
        flagged = error is not None and error.is_error
        shared.shipper.emit(
            app.name,
            format_line(
                method=self.method.decode("latin-1"),
                path=self.url.decode("latin-1"),
                host=self.host,
                request_id=self.request_id.decode("latin-1"),
                fwd=self.fwd.decode("latin-1"),
                dyno=dyno,
                connect_ms=connect_ms,
                service_ms=service_ms,
                status=status,
                bytes_sent=self.bytes_out,
                protocol=shared.proto,
                code=error.code if flagged and error is not None else "",
                desc=error.desc if flagged and error is not None else "",
            ),
        )

    def fail(self, error: RouterError) -> None:
        """Answer with the router's own page (or cut the connection if the
        response already started) and log ``error``."""
        if self.state == DONE:
            return
        self.flush()
        self.abandon_upstream()
        client = self.client
        transport = client.transport
        keep = self.keep_alive and self.request_done and not self.upgrade
        if self.response_started:
            keep = False
            status = self.status
            client.close()
        else:
            status = error.status
            page = self.shared.pages.get(error, keep_alive=keep, head_only=self.method == b"HEAD")
            self.bytes_out += len(page)
            if transport is not None and not client.closed:
                transport.write(page)
        self.complete(status, error, keep)

    def abandon_upstream(self) -> None:
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.waiting and self.app is not None:
            self.waiting = False
            self.shared.balancer.cancel_wait(self.app.name, self.wake)
        self.shared.boot_waiters.discard(self)
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()  # mid-exchange: never reusable

    # == events from the connections ==========================================
    def client_gone(self) -> None:
        """The client closed its connection (H27 unless we were done)."""
        if self.state == DONE:
            return
        if self.state == TUNNEL:
            self.state = DONE
            self.abandon_upstream()
            return
        started = self.state != NEW
        self.abandon_upstream()
        if started and self.app is not None:
            self.complete(pages.H27.status, pages.H27, False)
        else:
            self.state = DONE
            self.release_dyno()

    def upstream_lost(self) -> None:
        """The dyno's connection closed under us."""
        if self.state == DONE:
            return
        self.upstream = None
        client = self.client
        if self.state == TUNNEL:
            self.state = DONE
            client.close()
            return
        if self.response_started:
            if self.until_close:
                self.finish_response()  # the dyno framed its body by closing
            else:
                self.fail(pages.H18)
            return
        if self.reused and self.body_sent == 0 and not self.retried:
            # A pooled connection the dyno had just closed: nothing reached the
            # app, so a fresh connection to the same dyno is safe.
            self.retried = True
            self.reused = False
            self.shared.metrics.upstream_retries += 1
            self.connect()
            return
        self.fail(pages.H13 if self.request_done else pages.H18)

    def upstream_bad_response(self) -> None:
        self.fail(pages.H17)

    def upstream_upgraded(self, rest: bytes) -> None:
        """The dyno answered 101: from here on bytes flow both ways untouched."""
        conn = self.upstream
        client = self.client
        if conn is None or self.status != 101:
            self.fail(pages.H17)
            return
        conn.tunnel = True
        self.flush()
        self.state = TUNNEL
        if rest and client.transport is not None:
            client.transport.write(rest)
        # The request is logged now: a WebSocket may stay open for hours and
        # must not hold one of the dyno's in-flight slots meanwhile.
        self.upstream = conn
        saved_state = self.state
        self.complete_tunnel()
        self.state = saved_state
        client.start_tunnel(conn)

    def complete_tunnel(self) -> None:
        self.release_dyno()
        self.log(101, None)

    def tunnel_from_upstream(self, data: bytes) -> None:
        client = self.client
        if client.transport is not None:
            client.transport.write(data)
        client.deadline = client.loop.time() + self.shared.limits.idle_timeout
