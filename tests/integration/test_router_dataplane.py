"""The native data plane over real sockets: a real HTTP/1.1 dyno behind it and
raw clients in front (so the exact bytes on the wire are what is checked)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from router.dataplane import NativePlane, PlaneSettings, RouteEntry
from slipway import engines
from slipway.logline import decode_batch
from tests.harness.wait import eventually

HOST = "demo.example.test"


class Dyno(BaseHTTPRequestHandler):
    """Echoes what it received as JSON; /chunked answers with a chunked body."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, object]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self) -> None:
        body = self._body()
        record = {
            "method": self.command,
            "path": self.path,
            "peer_port": self.client_address[1],
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_len": len(body),
        }
        Dyno.seen.append(record)
        out = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(out), 7):
                piece = out[i : i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    do_GET = do_POST = do_HEAD = _answer


@pytest.fixture
def dyno() -> Iterator[int]:
    Dyno.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dyno)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def route(
    app: str,
    dynos: list[tuple[str, str]],
    *,
    web: int | None = None,
    released: bool = True,
    maintenance: bool = False,
    crashed: bool = False,
    least_loaded: bool = False,
) -> RouteEntry:
    wanted = len(dynos) if web is None else web
    return (app, wanted, released, maintenance, crashed, least_loaded, dynos)


@pytest.fixture
def plane(dyno: int) -> Iterator[tuple[NativePlane, int]]:
    native = NativePlane(PlaneSettings(response_timeout=5))
    closed = engines.free_port()  # nothing listens there: connection refused
    native.set_routes(
        {
            HOST: route("demo", [(f"127.0.0.1:{dyno}", "web.1")]),
            "idle.example.test": route("idle", []),
            "broken.example.test": route("broken", [(f"127.0.0.1:{closed}", "web.1")]),
        }
    )
    port = native.listen("127.0.0.1", 0)
    try:
        yield native, port
    finally:
        native.stop()


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response off ``sock`` (Content-Length or chunked); extra bytes stay in ``buf``."""

    def fill() -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-response")
        buf.extend(chunk)

    while b"\r\n\r\n" not in buf:
        fill()
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                fill()
            size_line, _, rest = bytes(buf).partition(b"\r\n")
            buf[:] = rest
            size = int(size_line, 16)
            while len(buf) < size + 2:
                fill()
            body += bytes(buf[:size])
            buf[:] = buf[size + 2 :]
            if size == 0:
                return status, headers, body
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        fill()
    body = bytes(buf[:length])
    buf[:] = buf[length:]
    return status, headers, body


def collect_logs(native: NativePlane, lines: int) -> dict[str, list[str]]:
    """Batches taken until ``lines`` lines came: a line is written just after
    its response, so a client can read the answer before the line exists."""
    got: dict[str, list[str]] = {}

    def enough() -> bool:
        taken = native.take_logs()
        assert len({app for app, _ in taken}) == len(taken), "one batch per app"
        for app, batch in taken:
            decoded = decode_batch(batch, f"logs.{app}.router")
            assert all(
                x.app == app and (x.source, x.process) == ("heroku", "router") for x in decoded
            )
            assert len(decoded) == batch.count(b"\n"), "every line is readable"
            got.setdefault(app, []).extend(x.message for x in decoded)
        return sum(map(len, got.values())) >= lines

    eventually(enough)
    return got


def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        return read_response(sock, bytearray())


def test_a_request_reaches_the_dyno_with_the_routers_headers(
    plane: tuple[NativePlane, int],
) -> None:
    _, port = plane
    status, headers, body = request(
        port,
        b"GET /hello?x=1 HTTP/1.1\r\nHost: Demo.Example.Test:8080\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"Proxy-Connection: keep-alive\r\nUser-Agent: test\r\n\r\n",
    )
    assert status == 200 and headers["connection"] == "keep-alive"
    seen = json.loads(body)
    got = seen["headers"]
    assert seen["path"] == "/hello?x=1"
    assert got["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"  # appended to
    assert got["x-forwarded-proto"] == "http"  # the client's own is not believed
    assert got["x-forwarded-port"] == str(port)  # the port the client connected to
    assert got["via"] == "1.1 slipway"
    assert uuid.UUID(got["x-request-id"]).version == 4 and int(got["x-request-start"]) > 0
    assert got["user-agent"] == "test" and "proxy-connection" not in got


def test_a_valid_client_request_id_is_kept(plane: tuple[NativePlane, int]) -> None:
    _, port = plane
    rid = "abcdefghij0123456789-ok"
    _, _, body = request(
        port, f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Request-Id: {rid}\r\n\r\n".encode()
    )
    assert json.loads(body)["headers"]["x-request-id"] == rid


def test_keep_alive_both_sides_and_bodies_in_both_framings(
    plane: tuple[NativePlane, int],
) -> None:
    _, port = plane
    payload = bytes(range(256)) * 400  # 100 KiB
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buf = bytearray()
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: "
            + HOST.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        status, _, body = read_response(sock, buf)
        first = json.loads(body)
        assert status == 200 and first["body_len"] == len(payload)
        assert first["body_sha256"] == hashlib.sha256(payload).hexdigest()

        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:1000], payload[1000:]))
        sock.sendall(
            b"POST /chunked HTTP/1.1\r\nHost: "
            + HOST.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )
        status, headers, body = read_response(sock, buf)  # chunked back, relayed as is
        second = json.loads(body)
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert second["body_sha256"] == hashlib.sha256(payload).hexdigest()

        sock.sendall(b"GET /third HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        _, _, body = read_response(sock, buf)
        third = json.loads(body)
    # The body-less request went over the pooled connection the chunked one left.
    assert third["peer_port"] == second["peer_port"]


def test_errors_answer_with_the_routers_pages(plane: tuple[NativePlane, int]) -> None:
    native, port = plane
    status, _, body = request(port, b"GET / HTTP/1.1\r\nHost: nope.example.test\r\n\r\n")
    assert status == 404 and b"No such app" in body
    status, headers, body = request(port, b"GET / HTTP/1.1\r\nHost: idle.example.test\r\n\r\n")
    assert status == 503 and b"H14" in body and headers["retry-after"] == "10"
    status, _, body = request(port, b"GET / HTTP/1.1\r\nHost: broken.example.test\r\n\r\n")
    assert status == 503 and b"H99" in body  # its only dyno refused: quarantined, none left
    assert native.counters()["quarantines"] == 1
    status, _, body = request(port, b"GET / HTTP/1.1\r\nHost: broken.example.test\r\n\r\n")
    assert status == 503 and b"H99" in body
    assert native.counters()["quarantines"] == 1  # still quarantined: not even tried

    logs = collect_logs(native, 3)  # an unknown host has no app to log to
    (h14,) = logs["idle"]
    assert h14.startswith(
        'at=error code=H14 desc="No web processes running" method=GET path="/" '
        "host=idle.example.test "
    )
    assert "status=503" in h14 and "dyno=none" in h14
    assert all("code=H99" in line for line in logs["broken"]) and len(logs["broken"]) == 2
    assert native.take_logs() == []  # each line is handed over once


def test_smuggling_shapes_never_reach_the_dyno(plane: tuple[NativePlane, int]) -> None:
    _, port = plane
    attacks = [
        b"POST / HTTP/1.1\r\nHost: demo.example.test\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: demo.example.test\r\nContent-Length: 4\r\n"
        b"Content-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: demo.example.test\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: demo.example.test\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ]
    for raw in attacks:
        status, headers, _ = request(port, raw)
        # A transfer coding other than plain chunked is 501, as the Python router answers.
        expected = 501 if b"xchunked" in raw else 400
        assert status == expected and headers["connection"] == "close", raw
    assert Dyno.seen == []


def test_log_lines_come_in_one_batch_per_app(plane: tuple[NativePlane, int]) -> None:
    native, port = plane
    for n in range(5):
        request(port, f"GET /n/{n} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    batches = collect_logs(native, 5)
    assert list(batches) == ["demo"]
    lines = batches["demo"]
    assert [line.split(" path=")[1].split()[0] for line in lines] == [f'"/n/{n}"' for n in range(5)]
    assert all(line.startswith("at=info method=GET ") and "dyno=web.1" in line for line in lines)
    assert all("status=200" in line and "protocol=http" in line for line in lines)
    assert native.counters()["requests"] == 5


def get(port: int, host: str, path: str = "/") -> tuple[int, bytes]:
    status, _, body = request(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return status, body


def test_a_refused_connect_is_retried_on_another_dyno(dyno: int) -> None:
    native = NativePlane(PlaneSettings(quarantine=60))
    dead = f"127.0.0.1:{engines.free_port()}"
    native.set_routes({HOST: route("demo", [(dead, "web.1"), (f"127.0.0.1:{dyno}", "web.2")])})
    port = native.listen("127.0.0.1", 0)
    try:
        answers = [get(port, HOST, f"/r{n}")[0] for n in range(20)]
        assert answers == [200] * 20  # none failed: the dead dyno was skipped
        assert native.counters()["quarantines"] == 1  # tried once, then left alone
        lines = collect_logs(native, 20)["demo"]
        assert all("dyno=web.2" in line for line in lines)
    finally:
        native.stop()


def test_admission_pages(dyno: int) -> None:
    native = NativePlane()
    live = [(f"127.0.0.1:{dyno}", "web.1")]
    native.set_routes(
        {
            "down.example.test": route("down", live, maintenance=True),
            "blank.example.test": route("blank", [], web=0, released=False),
            "crashed.example.test": route("crashed", [], web=1, crashed=True),
        }
    )
    port = native.listen("127.0.0.1", 0)
    try:
        assert get(port, "down.example.test")[0] == 503
        assert b"H80" in get(port, "down.example.test")[1]
        assert b"H81" in get(port, "blank.example.test")[1]
        assert b"H10" in get(port, "crashed.example.test")[1]
        assert Dyno.seen == []
    finally:
        native.stop()


def test_requests_wait_for_booting_dynos_then_h20(dyno: int) -> None:
    native = NativePlane(PlaneSettings(boot_timeout=30))
    booting = route("boot", [], web=1)
    native.set_routes({"boot.example.test": booting})
    port = native.listen("127.0.0.1", 0)
    try:
        held: list[tuple[int, bytes]] = []
        thread = threading.Thread(target=lambda: held.append(get(port, "boot.example.test")))
        thread.start()
        # Held, not answered, while no dyno is routed: a table change elsewhere
        # does not end the hold either.
        eventually(lambda: native.counters()["requests"] == 1)
        native.set_routes({"boot.example.test": booting, HOST: route("demo", [])})
        thread.join(0.3)
        assert thread.is_alive() and held == []
        native.set_routes({"boot.example.test": route("boot", [(f"127.0.0.1:{dyno}", "web.1")])})
        thread.join(10)
        assert held and held[0][0] == 200
    finally:
        native.stop()

    quick = NativePlane(PlaneSettings(boot_timeout=0.2))
    quick.set_routes({"boot.example.test": booting})
    port = quick.listen("127.0.0.1", 0)
    try:
        status, body = get(port, "boot.example.test")
        assert status == 503 and b"H20" in body
    finally:
        quick.stop()


def test_busy_dynos_queue_requests_then_h11() -> None:
    """One slot per dyno, room for one waiting request: the third is H11."""
    release = threading.Event()
    entered = threading.Semaphore(0)

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            entered.release()
            release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    native = NativePlane(PlaneSettings(max_inflight_per_dyno=1, backlog_per_dyno=1))
    native.set_routes({HOST: route("demo", [(f"127.0.0.1:{server.server_address[1]}", "web.1")])})
    port = native.listen("127.0.0.1", 0)
    try:
        answers: list[int] = []
        clients = [
            threading.Thread(target=lambda: answers.append(get(port, HOST)[0])) for _ in range(2)
        ]
        clients[0].start()
        assert entered.acquire(timeout=10)  # the first is at the dyno
        clients[1].start()
        eventually(lambda: native.counters()["waiting"] == 1)  # the second waits
        status, body = get(port, HOST)
        assert status == 503 and b"H11" in body  # the backlog is full
        release.set()
        for c in clients:
            c.join(10)
        assert sorted(answers) == [200, 200]  # the waiting one got the freed slot
        assert entered.acquire(timeout=1)  # and reached the dyno after the first
    finally:
        native.stop()
        server.shutdown()
        server.server_close()


def test_limits_and_header_rules(plane: tuple[NativePlane, int]) -> None:
    _, port = plane
    long_url = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    status, _, body = request(port, long_url)
    assert status == 400 and b"Request line too long" in body
    big_header = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {'b' * 9000}\r\n\r\n".encode()
    status, _, body = request(port, big_header)
    assert status == 400 and b"Request header too large" in body
    gzip = f"POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    status, _, _ = request(port, gzip.encode())
    assert status == 501
    assert Dyno.seen == []

    status, _, body = request(
        port,
        f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, X-Secret\r\n"
        "X-Secret: hop\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 198.51.100.2\r\n"
        "X-Kept: yes\r\n\r\n".encode(),
    )
    got = json.loads(body)["headers"]
    assert status == 200 and "x-secret" not in got and got["x-kept"] == "yes"
    assert got["x-forwarded-for"] == "198.51.100.1, 198.51.100.2, 127.0.0.1"


def test_an_upgraded_connection_is_a_tunnel_both_ways() -> None:
    """A WebSocket-style upgrade: 101 passed on, then bytes both ways."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen_head: list[bytes] = []

    def dyno_side() -> None:
        conn, _ = server.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            seen_head.append(head)
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
            )
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    threading.Thread(target=dyno_side, daemon=True).start()
    native = NativePlane()
    native.set_routes({HOST: route("demo", [(f"127.0.0.1:{server.getsockname()[1]}", "web.1")])})
    port = native.listen("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\n"
                "Upgrade: echo\r\n\r\n".encode()
            )
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(4096)
            head, _, rest = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"Connection: Upgrade" in head and b"Upgrade: echo" in head
            sock.sendall(b"hello tunnel")
            echoed = rest
            while len(echoed) < len(b"hello tunnel"):
                echoed += sock.recv(4096)
            assert echoed == b"HELLO TUNNEL"
        assert b"Upgrade: echo" in seen_head[0] and b"Connection: Upgrade" in seen_head[0]
        line = collect_logs(native, 1)["demo"][0]
        assert "status=101" in line and 'path="/ws"' in line
    finally:
        native.stop()
        server.close()


def test_a_stalled_body_either_way_ends_with_h28_or_h15(dyno: int) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop_stalling = threading.Event()

    def stalling_dyno() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            stop_stalling.wait(10)

    threading.Thread(target=stalling_dyno, daemon=True).start()
    native = NativePlane(PlaneSettings(body_idle_timeout=0.3))
    native.set_routes(
        {
            HOST: route("demo", [(f"127.0.0.1:{dyno}", "web.1")]),
            "stall.example.test": route(
                "stall", [(f"127.0.0.1:{server.getsockname()[1]}", "web.1")]
            ),
        }
    )
    port = native.listen("127.0.0.1", 0)
    try:
        # The client stops sending its body: 408 H28.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nabc".encode()
            )
            status, _, body = read_response(sock, bytearray())
            assert status == 408 and b"Request timeout" in body
        # The dyno stops sending its answer: the client is cut off after what came.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: stall.example.test\r\n\r\n")
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            assert received.endswith(b"\r\n\r\n0123456789")
        logs = collect_logs(native, 2)
        assert "code=H28" in logs["demo"][0] and "status=408" in logs["demo"][0]
        assert "code=H15" in logs["stall"][0] and "bytes=10" in logs["stall"][0]
    finally:
        stop_stalling.set()
        native.stop()
        server.close()
