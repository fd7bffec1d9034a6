"""Sending drain batches: syslog over TCP or TLS, and logplex POSTs over HTTPS.

Both senders take lines in order, each tagged with the LOGS stream sequence of
the message holding it, and say which lines are *confirmed*: one sequence per
confirmed line, so a message of several lines (a batch) is named once for each,
and the caller acknowledges it in JetStream once all are (see
:mod:`controller.bus.drains`). Lines handed to a sender are its own from then
on, even when ``send`` raises :class:`DeliveryError`: it sends them again
(first, in order) on the next call, so the caller never hands the same line
over twice. ``outstanding()`` says how many it holds unconfirmed; the caller
bounds that.

- HTTPS: lines are confirmed by a 2xx answer to the POST carrying them.
- syslog: TCP has no application-level acknowledgement, so a batch counts as
  confirmed once it was written and the connection has stayed open for
  ``confirm_after`` seconds since (a receiver that dies closes it, and
  we notice). Unconfirmed batches are written again on the next connection:
  a line may then arrive twice, never not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from controller.core.drains import DrainURL, logplex_body, octet_frame, syslog_message
from slipway.logline import LogLine

Item = tuple[int, LogLine]  # (LOGS stream sequence of its message, line)
CONNECT_TIMEOUT = 10.0
IO_TIMEOUT = 30.0
MAX_RESPONSE_HEAD = 16 * 1024


class DeliveryError(Exception):
    """The receiver could not be reached or refused the batch (the message says how)."""


class Sender(Protocol):
    async def send(self, items: Sequence[Item]) -> list[int]:
        """Hand ``items`` over; returns the sequences of the lines now confirmed
        (maybe earlier ones), one entry per line and each line once."""
        ...

    def confirmed(self) -> list[int]:
        """Lines confirmed since the last call (as ``send`` says them), sending nothing."""
        ...

    def outstanding(self) -> int:
        """Lines handed over and not yet confirmed."""
        ...

    async def close(self) -> None: ...


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Certificates are checked against the system's CAs, plus ``ca_file`` if given."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _open(
    url: DrainURL, context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await asyncio.open_connection(
                url.host,
                url.port,
                ssl=context if url.tls else None,
                server_hostname=url.host if url.tls else None,
            )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise DeliveryError(f"cannot connect to {url.host}:{url.port}: {exc}") from exc


class SyslogSender:
    def __init__(
        self,
        url: DrainURL,
        token: str,
        context: ssl.SSLContext | None,
        *,
        confirm_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.token = token
        self.context = context
        self.confirm_after = confirm_after
        self.clock = clock
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closed_by_peer: asyncio.Task[bytes] | None = None
        # Written but not yet confirmed: (when written, items), oldest first.
        self._unconfirmed: list[tuple[float, list[Item]]] = []

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._peer_closed():
            return self._writer
        await self._drop()
        self._reader, self._writer = await _open(self.url, self.context)
        # A receiver sends nothing; a finished read means it closed or reset.
        self._closed_by_peer = asyncio.create_task(self._reader.read(1))
        # Whatever the last connection may have lost goes again, in order.
        again = [item for _, items in self._unconfirmed for item in items]
        self._unconfirmed = []
        if again:
            await self._write(self._writer, again)
        return self._writer

    def _peer_closed(self) -> bool:
        return self._closed_by_peer is not None and self._closed_by_peer.done()

    async def _write(self, writer: asyncio.StreamWriter, items: list[Item]) -> None:
        frames = b"".join(octet_frame(syslog_message(line, self.token)) for _, line in items)
        try:
            writer.write(frames)
            async with asyncio.timeout(IO_TIMEOUT):
                await writer.drain()
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._unconfirmed.append((self.clock(), items))
            await self._drop()
            raise DeliveryError(f"lost the connection to {self.url.host}: {exc}") from exc
        self._unconfirmed.append((self.clock(), items))

    async def send(self, items: Sequence[Item]) -> list[int]:
        if self._writer is None or self._peer_closed():
            # Not connected: keep the lines (sent first on the next connection).
            if items:
                self._unconfirmed.append((self.clock(), list(items)))
            await self._connection()
            return self.confirmed()
        if items:
            await self._write(self._writer, list(items))
        return self.confirmed()

    def outstanding(self) -> int:
        return sum(len(items) for _, items in self._unconfirmed)

    def confirmed(self) -> list[int]:
        if self._writer is None or self._peer_closed():
            return []  # resent on the next connection, confirmed after that
        horizon = self.clock() - self.confirm_after
        done: list[int] = []
        while self._unconfirmed and self._unconfirmed[0][0] <= horizon:
            done.extend(seq for seq, _ in self._unconfirmed.pop(0)[1])
        return done

    async def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if self._closed_by_peer is not None:
            self._closed_by_peer.cancel()
            self._closed_by_peer = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await writer.wait_closed()

    async def close(self) -> None:
        await self._drop()


class HttpsSender:
    """POSTs with ``Content-Type: application/logplex-1`` over one kept-alive connection."""

    def __init__(self, url: DrainURL, token: str, context: ssl.SSLContext | None) -> None:
        self.url = url
        self.token = token
        self.context = context
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._pending: list[Item] = []

    def outstanding(self) -> int:
        return len(self._pending)

    async def send(self, items: Sequence[Item]) -> list[int]:
        self._pending.extend(items)
        if not self._pending:
            return []
        batch = list(self._pending)
        await self._post(batch)
        del self._pending[: len(batch)]
        return [seq for seq, _ in batch]

    async def _post(self, items: list[Item]) -> None:
        lines = [line for _, line in items]
        body = logplex_body(lines, self.token)
        host = self.url.host if self.url.port == 443 else f"{self.url.host}:{self.url.port}"
        head = [
            f"POST {self.url.path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/logplex-1",
            f"Content-Length: {len(body)}",
            f"Logplex-Msg-Count: {len(lines)}",
            f"Logplex-Frame-Id: {uuid.uuid4().hex}",
            f"Logplex-Drain-Token: {self.token}",
            "User-Agent: slipway-logplex/1",
        ]
        if auth := self.url.authorization():
            head.append(f"Authorization: {auth}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in (1, 2):
            fresh = self._conn is None
            reader, writer = self._conn or await _open(self.url, self.context)
            self._conn = (reader, writer)
            try:
                writer.write(request)
                async with asyncio.timeout(IO_TIMEOUT):
                    await writer.drain()
                    status, keep = await _read_response(reader)
            except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                await self.close()
                if attempt == 1 and not fresh:
                    continue  # a kept-alive connection the receiver had closed
                raise DeliveryError(f"POST to {self.url.host} failed: {exc!r}") from exc
            if not keep:
                await self.close()
            if 200 <= status < 300:
                return
            raise DeliveryError(f"{self.url.host} answered HTTP {status}")

    def confirmed(self) -> list[int]:
        return []  # every batch is confirmed by its own answer

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn[1].wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether the connection may be reused; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_RESPONSE_HEAD:
        raise OSError("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP response: {lines[0][:80]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    keep = headers.get("connection") != "close" and parts[0] == "HTTP/1.1"
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif status not in (204, 304):
        keep = False  # the body runs to the end of the connection
    return status, keep


def sender_for(url: DrainURL, token: str, ca_file: str = "") -> Sender:
    context = tls_context(ca_file) if url.tls else None
    if url.http:
        return HttpsSender(url, token, context)
    return SyslogSender(url, token, context)
