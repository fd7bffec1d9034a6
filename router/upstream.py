"""Connections to dynos: one asyncio.Protocol per TCP connection, pooled per dyno.

A connection is owned by at most one exchange (request/response) at a time;
while owned, its bytes go to that exchange's response parser. Idle
connections wait in a per-dyno LIFO stack (the most recently used one is the
least likely to have been closed by the dyno) and are dropped after
``upstream_idle_timeout``, which is shorter than common app servers'
keep-alive, so the router is normally the side that closes. The remaining
race (a dyno closing just as a request is written) is handled by the
exchange: a reused connection that closes before any response byte and
before any body byte was sent is retried once on a fresh connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import httptools

if TYPE_CHECKING:
    from router.proxy import Exchange


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "address",
        "closed",
        "exchange",
        "idle_since",
        "parser",
        "paused",
        "pool",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: UpstreamPool, address: str) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser: Any = None
        self.idle_since = 0.0
        self.closed = False
        self.tunnel = False
        self.paused = False

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection are a protocol error by the dyno.
            self.close()
            return
        if self.tunnel:
            exchange.tunnel_from_upstream(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            exchange.upstream_upgraded(data[exc.args[0] :])
            return
        except httptools.HttpParserError:
            exchange.upstream_bad_response()
            return
        if exchange.response_done:
            exchange.finish_response()
        else:
            exchange.flush()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        exchange = self.exchange
        self.exchange = None
        if exchange is not None:
            exchange.upstream_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(False)

    # -- reading (paused while the client cannot take more) -----------------
    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    # -- ownership ----------------------------------------------------------
    def attach(self, exchange: Exchange) -> None:
        self.exchange = exchange
        # A fresh parser per response: a HEAD response or an abandoned one
        # can never leave the next response misparsed.
        self.parser = httptools.HttpResponseParser(exchange)

    def detach(self) -> None:
        self.exchange = None
        self.parser = None

    def close(self) -> None:
        self.exchange = None
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.exchange = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    def __init__(self, idle_timeout: float, size: int) -> None:
        self.idle_timeout = idle_timeout
        self.size = size
        self.idle: dict[str, list[UpstreamConnection]] = {}

    def get(self, address: str, now: float) -> UpstreamConnection | None:
        stack = self.idle.get(address)
        while stack:
            conn = stack.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.idle_timeout:
                conn.close()
                continue
            return conn
        return None

    def put(self, conn: UpstreamConnection, now: float) -> None:
        conn.detach()
        if conn.closed:
            return
        # An idle connection must be read, or a close by the dyno goes unseen.
        conn.resume_reading()
        stack = self.idle.setdefault(conn.address, [])
        if len(stack) >= self.size:
            conn.close()
            return
        conn.idle_since = now
        stack.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        stack = self.idle.get(conn.address)
        if stack and conn in stack:
            stack.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout."""
        for address in list(self.idle):
            stack = self.idle[address]
            keep = []
            for conn in stack:
                if conn.closed:
                    continue
                if now - conn.idle_since > self.idle_timeout:
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self.idle[address] = keep
            else:
                del self.idle[address]

    def idle_count(self) -> int:
        return sum(len(s) for s in self.idle.values())

    def close_all(self) -> None:
        for stack in self.idle.values():
            for conn in stack:
                conn.close()
        self.idle.clear()

    async def connect(self, host: str, port: int, timeout: float) -> UpstreamConnection:
        """A new connection; raises OSError (refused etc.) or TimeoutError."""
        loop = asyncio.get_running_loop()
        address = f"{host}:{port}"
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self, address), host, port
            )
        return conn
