"""Log drains end to end: real controllers, nats-server and etcd; a real rsyslog
as the syslog receiver (plain TCP and TLS) and an HTTPS receiver of the test's
own. Lines are published on the app's log subject as an agent publishes them.

Checked as a drain's owner would: every numbered line arrives at least once and
in order (first arrivals ascend), across a restart of the receiver and a kill -9
of the controller sending the drain; a receiver that stays away past the buffer
gets one L10 line with the exact count of what was dropped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats.js.errors
import pytest

from slipway import engines, logline
from slipway.logline import LogLine
from tests.harness import secure
from tests.harness.controller import ControllerProcess
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NUMBERED = re.compile(r"line-(\d{5})")


# ----- certificates (openssl) ---------------------------------------------------


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(root: Path) -> Certs:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    root.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=drain test CA")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (root / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return Certs(root / "ca.pem", root / "server.pem", root / "server.key")


# ----- receivers ------------------------------------------------------------------


class Rsyslog:
    """A real rsyslogd receiving on one TCP port (plain or TLS) into a file."""

    def __init__(self, workdir: Path, port: int, certs: Certs | None = None) -> None:
        self.workdir = workdir
        self.port = port
        self.out = workdir / "received.log"
        workdir.mkdir(parents=True, exist_ok=True)
        tls = ""
        module = 'module(load="imtcp")'
        if certs is not None:
            tls = (
                f'global(DefaultNetstreamDriverCAFile="{certs.ca}" '
                f'DefaultNetstreamDriverCertFile="{certs.cert}" '
                f'DefaultNetstreamDriverKeyFile="{certs.key}")\n'
            )
            module = (
                'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                'StreamDriver.AuthMode="anon")'
            )
        (workdir / "rsyslog.conf").write_text(
            f'global(workDirectory="{workdir}")\n'
            f"{tls}{module}\n"
            f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
            'template(name="raw" type="string" string="%hostname% %app-name% %procid% %msg%\\n")\n'
            f'*.* action(type="omfile" file="{self.out}" template="raw")\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("rsyslogd") or "/usr/sbin/rsyslogd",
                "-n",
                "-f",
                str(self.workdir / "rsyslog.conf"),
                "-i",
                str(self.workdir / "rsyslog.pid"),
            ],
            stdout=open(self.workdir / "rsyslogd.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        engines.wait_for_port("127.0.0.1", self.port, 20)

    def stop(self) -> None:
        engines.terminate(self.proc)

    def lines(self) -> list[str]:
        try:
            return self.out.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


@dataclass
class Post:
    headers: dict[str, str]
    frames: list[str]


@dataclass
class HttpsReceiver:
    """Answers logplex POSTs with ``status`` (200 unless the test says otherwise)."""

    certs: Certs
    port: int = 0
    status: int = 200
    posts: list[Post] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certs.cert, self.certs.key)
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers["content-length"]))
                if self.status == 200:
                    self.posts.append(Post(headers, split_frames(body)))
                writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def messages(self) -> list[str]:
        return [frame for post in self.posts for frame in post.frames]


def split_frames(body: bytes) -> list[str]:
    """Octet-counted frames: ``LEN SP MSG`` repeated."""
    frames = []
    while body:
        size, _, rest = body.partition(b" ")
        n = int(size)
        frames.append(rest[:n].decode())
        body = rest[n:]
    return frames


# ----- the platform side ----------------------------------------------------------


def controller(
    etcd_endpoint: str, prefix: str, nats_url: str, workdir: Path, certs: Certs
) -> ControllerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "controller.toml"
    config.write_text(f'drain_ca_file = "{certs.ca}"\ndrain_ttl_seconds = 2\n')
    return ControllerProcess(
        etcd_endpoint, prefix, workdir, nats_url, extra_args=["--config", str(config)]
    )


async def publish(nats_url: str, app: str, numbers: range) -> None:
    nc = await secure.nats_connect(nats_url)
    js = nc.jetstream()
    try:
        for n in numbers:
            line = LogLine(app, "app", "web.1", f"line-{n:05d} from the app")
            await js.publish(logline.subject(app, logline.Origin.NODE), line.encode())
    finally:
        await nc.close()


async def publish_batches(nats_url: str, app: str, numbers: range, per_message: int) -> None:
    """Router lines, ``per_message`` to a message, as the router batches an interval's."""
    nc = await secure.nats_connect(nats_url)
    js = nc.jetstream()
    subject = logline.subject(app, logline.Origin.ROUTER)
    try:
        for start in range(numbers.start, numbers.stop, per_message):
            lines = [
                LogLine(app, "heroku", "router", f"line-{n:05d} at=info status=200")
                for n in range(start, min(start + per_message, numbers.stop))
            ]
            await js.publish(subject, logline.encode_batch(lines))
    finally:
        await nc.close()


async def undelivered(nats_url: str, consumer: str) -> int | None:
    """Lines of the drain's consumer not yet read by its worker; None before the
    pool has started the drain (it makes the consumer on its next pass)."""
    nc = await secure.nats_connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(logline.STREAM, consumer)
        return int(info.num_pending or 0)
    except nats.js.errors.NotFoundError:
        return None
    finally:
        await nc.close()


def wait_for_drain(ctl: ControllerProcess, nats_url: str, app: str) -> None:
    """Until the pool has started the app's drain: lines published before then
    may pass the stream's per-app limit (1500) before the drain reads them."""
    drains = json.loads(ctl.cli("drains", "-a", app, "--json", check=True).stdout)
    consumer = "drain-" + drains[0]["id"]
    eventually(lambda: asyncio.run(undelivered(nats_url, consumer)) is not None, 60, 0.2)


def numbers_in(texts: list[str]) -> list[int]:
    return [int(m.group(1)) for t in texts if (m := NUMBERED.search(t))]


def assert_all_in_order(texts: list[str], total: int) -> None:
    seen = numbers_in(texts)
    first: list[int] = []
    got: set[int] = set()
    for n in seen:
        if n not in got:
            got.add(n)
            first.append(n)
    missing = sorted(set(range(total)) - got)
    assert not missing, f"{len(missing)} lines never arrived, e.g. {missing[:10]}"
    assert first == sorted(first), "first arrivals out of order"


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def controllers(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path, certs: Certs
) -> Iterator[list[ControllerProcess]]:
    """Two controllers: the drain pool has a survivor when one is killed."""
    first = controller(etcd_endpoint, etcd_prefix, nats_url, tmp_path / "c1", certs)
    first.start()
    second = controller(etcd_endpoint, etcd_prefix, nats_url, tmp_path / "c2", certs)
    second.token = first.token
    second.start()
    try:
        yield [first, second]
    finally:
        for proc in (first, second):
            proc.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["syslog", "syslog+tls"])
def test_syslog_drain_gets_every_line_across_receiver_restart_and_sender_kill(
    controllers: list[ControllerProcess], nats_url: str, tmp_path: Path, certs: Certs, tls: bool
) -> None:
    ctl = controllers[0]
    app = "drained-tls" if tls else "drained"
    ctl.cli("apps:create", app, check=True)
    port = engines.free_port()
    receiver = Rsyslog(tmp_path / "rsyslog", port, certs if tls else None)
    receiver.start()
    try:
        scheme = "syslog+tls" if tls else "syslog"
        added = ctl.cli("drains:add", f"{scheme}://127.0.0.1:{port}", "-a", app, check=True)
        token = re.search(r"token: (d\.[0-9a-f-]+)", added.stdout)
        assert token, added.stdout
        listed = ctl.cli("drains", "-a", app, check=True).stdout
        assert f"{scheme}://127.0.0.1:{port}" in listed and token.group(1) in listed
        wait_for_drain(ctl, nats_url, app)

        asyncio.run(publish(nats_url, app, range(0, 3000)))
        eventually(lambda: len(set(numbers_in(receiver.lines()))) >= 3000, 60, 0.2)

        # The receiver restarts while lines keep coming (fewer than the 1500 a
        # drain holds for a receiver that is away).
        receiver.stop()
        asyncio.run(publish(nats_url, app, range(3000, 4000)))
        receiver.start()
        # The held lines come once the drain's backoff lets it try again (up to
        # 10 s); lines published before that could overflow the buffer, as designed.
        eventually(lambda: len(set(numbers_in(receiver.lines()))) >= 4000, 90, 0.2)
        asyncio.run(publish(nats_url, app, range(4000, 5000)))
        eventually(lambda: len(set(numbers_in(receiver.lines()))) >= 5000, 90, 0.2)

        # kill -9 whichever controller sends the drain; the other takes it over.
        sender = next(c for c in controllers if "drain started" in c.log_path.read_text())
        assert sender.proc is not None
        sender.proc.send_signal(signal.SIGKILL)
        sender.proc.wait(10)
        # Fewer lines while nobody sends than the stream keeps of an app (1500):
        # the drain catches up "within the retention".
        asyncio.run(publish(nats_url, app, range(5000, 6000)))
        eventually(lambda: len(set(numbers_in(receiver.lines()))) >= 6000, 60, 0.2)
        asyncio.run(publish(nats_url, app, range(6000, 10000)))
        eventually(lambda: len(set(numbers_in(receiver.lines()))) >= 10000, 120, 0.2)

        lines = receiver.lines()
        assert_all_in_order(lines, 10000)
        sample = next(line for line in lines if "line-00042" in line)
        assert sample.startswith(f"{token.group(1)} app web.1 "), sample
    finally:
        receiver.stop()


def test_https_drain_gets_every_line_with_logplex_framing_across_receiver_restart(
    controllers: list[ControllerProcess], nats_url: str, certs: Certs
) -> None:
    ctl = controllers[0]
    ctl.cli("apps:create", "posted", check=True)

    async def scenario() -> HttpsReceiver:
        receiver = HttpsReceiver(certs)
        await receiver.start()
        url = f"https://user:s3cret@127.0.0.1:{receiver.port}/logs"
        added = await asyncio.to_thread(ctl.cli, "drains:add", url, "-a", "posted", check=True)
        assert "s3cret" not in added.stdout and "user:*****@" in added.stdout
        await asyncio.to_thread(wait_for_drain, ctl, nats_url, "posted")
        await publish(nats_url, "posted", range(0, 4000))
        await wait_async(lambda: len(set(numbers_in(receiver.messages()))) >= 4000, 120)
        await receiver.stop()
        await publish(nats_url, "posted", range(4000, 5000))  # within what a drain holds
        await receiver.start()  # same port
        # See the syslog test: held lines first, then more.
        await wait_async(lambda: len(set(numbers_in(receiver.messages()))) >= 5000, 90)
        await publish(nats_url, "posted", range(5000, 10000))
        await wait_async(lambda: len(set(numbers_in(receiver.messages()))) >= 10000, 90)
        return receiver

    receiver = asyncio.run(scenario())
    assert_all_in_order(receiver.messages(), 10000)
    post = receiver.posts[0]
    assert post.headers["content-type"] == "application/logplex-1"
    assert int(post.headers["logplex-msg-count"]) == len(post.frames)
    assert post.headers["logplex-drain-token"].startswith("d.")
    assert post.headers["logplex-frame-id"]
    assert post.headers["authorization"] == "Basic " + base64.b64encode(b"user:s3cret").decode()
    first = next(f for f in receiver.messages() if "line-" in f)
    assert re.match(r"<190>1 \S+Z d\.[0-9a-f-]+ app web\.1 - - line-\d{5} from the app$", first)


def test_a_drain_gets_every_line_of_router_batches_across_receiver_restart_and_sender_kill(
    controllers: list[ControllerProcess], nats_url: str, certs: Certs
) -> None:
    ctl = controllers[0]
    ctl.cli("apps:create", "batched", check=True)
    # 70 lines a message: the sender's batches of 100 lines cut messages in two, so
    # messages are often confirmed in part when the receiver or the sender goes.
    per_message = 70

    async def scenario() -> HttpsReceiver:
        receiver = HttpsReceiver(certs)
        await receiver.start()
        url = f"https://127.0.0.1:{receiver.port}/logs"
        await asyncio.to_thread(ctl.cli, "drains:add", url, "-a", "batched", check=True)
        await asyncio.to_thread(wait_for_drain, ctl, nats_url, "batched")
        await publish_batches(nats_url, "batched", range(0, 2000), per_message)
        await wait_async(lambda: len(set(numbers_in(receiver.messages()))) >= 2000, 90)

        await receiver.stop()
        await publish_batches(nats_url, "batched", range(2000, 3000), per_message)
        await receiver.start()
        await wait_async(lambda: len(set(numbers_in(receiver.messages()))) >= 3000, 90)

        sender = next(c for c in controllers if "drain started" in c.log_path.read_text())
        assert sender.proc is not None
        sender.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(sender.proc.wait, 10)
        await publish_batches(nats_url, "batched", range(3000, 5000), per_message)
        await wait_async(lambda: len(set(numbers_in(receiver.messages()))) >= 5000, 120)
        return receiver

    receiver = asyncio.run(scenario())
    assert_all_in_order(receiver.messages(), 5000)
    first = next(f for f in receiver.messages() if "line-00000" in f)
    assert re.match(r"<190>1 \S+Z d\.[0-9a-f-]+ heroku router - - line-00000 at=info", first)


def test_a_receiver_away_past_the_buffer_gets_one_l10_line_with_the_count(
    controllers: list[ControllerProcess], nats_url: str, certs: Certs
) -> None:
    ctl = controllers[0]
    ctl.cli("apps:create", "overflow", check=True)

    async def scenario() -> tuple[HttpsReceiver, str]:
        receiver = HttpsReceiver(certs, status=503)  # there, but refusing everything
        await receiver.start()
        url = f"https://127.0.0.1:{receiver.port}/"
        await asyncio.to_thread(ctl.cli, "drains:add", url, "-a", "overflow", check=True)
        drains = await asyncio.to_thread(ctl.cli, "drains", "-a", "overflow", "--json", check=True)
        consumer = "drain-" + json.loads(drains.stdout)[0]["id"]
        # In steps, each read by the drain before the next, so the stream's own
        # limit (1500 lines an app) never discards a line the drain has not seen.
        for start in range(0, 3000, 500):
            await publish(nats_url, "overflow", range(start, start + 500))
            for _ in range(300):
                if await undelivered(nats_url, consumer) == 0:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the drain stopped reading the app's lines")
        receiver.status = 200
        await wait_async(lambda: any("Error L10" in m for m in receiver.messages()), 60)
        return receiver, consumer

    receiver, _ = asyncio.run(scenario())
    got = set(numbers_in(receiver.messages()))
    l10 = next(m for m in receiver.messages() if "Error L10" in m)
    dropped = int(re.search(r"dropped (\d+) messages", l10).group(1))  # type: ignore[union-attr]
    # Exact: what arrived and what the L10 line counts make up every line sent.
    assert len(got) + dropped == 3000, (
        len(got),
        dropped,
        sorted(set(range(3000)) - got)[-5:],
        [m[-60:] for m in receiver.messages() if "line-" not in m],
    )
    # Kept while away: the newest 1500 (the buffer) and the one batch being retried.
    assert 3000 - 1500 - 100 <= dropped <= 3000 - 1500
    logs = ctl.cli("logs", "-a", "overflow", "-n", "1500", check=True).stdout
    assert "heroku[logplex]: Error L10 (output buffer overflow)" in logs


async def wait_async(predicate: Callable[[], bool], timeout: float) -> None:
    """``eventually`` for a predicate on state the running loop itself fills in."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.1)
