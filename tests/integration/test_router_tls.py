"""HTTPS at the router: real TLS handshakes from Python's ssl (OpenSSL) against
the data plane's rustls, certificates from a CA made here."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509

from router.config import Listen
from slipway import pki
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import (
    BASE,
    Dyno,
    LogTap,
    RunningRouter,
    demo_router,
    read_response,
    request,
    router_config,
    routes,
    start_router,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def edge_ca(tmp_path: Path) -> tuple[pki.CA, Path]:
    ca = pki.init_ca(tmp_path / "ca", common="test edge CA")
    return ca, tmp_path / "ca" / "ca.crt"


def tls_config(etcd_endpoint: str, etcd_prefix: str, ca: pki.CA, tmp: Path, **kw):  # type: ignore[no-untyped-def]
    chain, key = pki.edge_certificate(ca, [f"*.{BASE}"])
    (tmp / "edge.crt").write_bytes(chain)
    (tmp / "edge.key").write_bytes(key)
    return replace(
        router_config(etcd_endpoint, etcd_prefix, **kw),
        listen_tls=(Listen("127.0.0.1", 0),),
        tls_cert=tmp / "edge.crt",
        tls_key=tmp / "edge.key",
    )


def logged_tls_config(etcd_endpoint, etcd_prefix, nats_url, ca, tmp):  # type: ignore[no-untyped-def]
    """:func:`tls_config` with router log lines sent to ``nats_url``."""
    return replace(
        tls_config(etcd_endpoint, etcd_prefix, ca, tmp),
        logs=replace(router_config(etcd_endpoint, etcd_prefix, nats_url).logs),
    )


@contextlib.asynccontextmanager
async def https_router(
    etcd_endpoint: str, etcd_prefix: str, ca: pki.CA, tmp: Path
) -> AsyncIterator[RunningRouter]:
    """App demo (one dyno) behind a router with an HTTPS listener."""
    dyno = await Dyno("web.1").start()
    try:
        config = tls_config(etcd_endpoint, etcd_prefix, ca, tmp)
        async with demo_router(etcd_endpoint, etcd_prefix, dyno, config) as rt:
            yield rt
    finally:
        await dyno.stop()


def https_port(rt: RunningRouter) -> int:
    return rt.router.tls_addresses[0][1]


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


async def https_get(
    rt: RunningRouter, ctx: ssl.SSLContext, host: str, path: str = "/"
) -> tuple[int, dict[str, str], bytes, dict]:  # type: ignore[type-arg]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", https_port(rt), ssl=ctx, server_hostname=host
    )
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        res = await read_response(reader)
        peer = writer.get_extra_info("peercert") or {}
        return res.status, res.headers, res.body, peer
    finally:
        writer.close()


async def name_not_served(rt: RunningRouter, ctx: ssl.SSLContext, host: str) -> bool:
    """Whether the router now serves ``host`` a certificate that does not name it
    (the default one, once its own is gone)."""
    try:
        await https_get(rt, ctx, host)
    except ssl.SSLCertVerificationError:
        return True
    return False


def names(peer: dict) -> set[str]:  # type: ignore[type-arg]
    return {value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"}


async def test_https_requests_reach_the_dyno_marked_https(
    etcd_endpoint, etcd_prefix, nats_url, edge_ca, tmp_path
):
    ca, ca_file = edge_ca
    dyno = await Dyno("web.1").start()
    config = logged_tls_config(etcd_endpoint, etcd_prefix, nats_url, ca, tmp_path)
    tap = await LogTap().start(nats_url, "demo")
    try:
        async with demo_router(etcd_endpoint, etcd_prefix, dyno, config) as rt:
            status, _, body, peer = await https_get(
                rt, client_context(ca_file), f"demo.{BASE}", "/secure"
            )
            assert status == 200 and body == b"hello from web.1"
            assert names(peer) == {f"*.{BASE}"}
            seen = dyno.requests[-1].headers
            assert seen["x-forwarded-proto"] == "https"
            assert seen["x-forwarded-port"] == str(https_port(rt))
            line = await tap.wait_for('path="/secure"', "protocol=https")
            assert "status=200" in line.message
            # Plain HTTP on the other listener still says http.
            assert (await request(rt.port, "/plain")).status == 200
            assert dyno.requests[-1].headers["x-forwarded-proto"] == "http"
    finally:
        await tap.stop()
        await dyno.stop()


# Offering the old protocols is the point of this test.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_old_protocols_and_weak_ciphers_are_refused_and_counted(
    etcd_endpoint, etcd_prefix, edge_ca, tmp_path
):
    ca, ca_file = edge_ca
    async with https_router(etcd_endpoint, etcd_prefix, ca, tmp_path) as rt:
        tls11 = client_context(ca_file)
        tls11.set_ciphers("DEFAULT:@SECLEVEL=0")
        tls11.minimum_version = ssl.TLSVersion.TLSv1
        tls11.maximum_version = ssl.TLSVersion.TLSv1_1
        # Static RSA key exchange with CBC: nothing a modern server offers.
        weak = client_context(ca_file)
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers("AES128-SHA:AES256-SHA:DES-CBC3-SHA")
        for ctx in (tls11, weak):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await https_get(rt, ctx, f"demo.{BASE}")

        async def counted() -> bool:
            return rt.router.plane.counters()["tls_handshake_failures"] >= 1

        await eventually_async(counted, timeout=10)
        # TLS 1.2 with a modern suite and TLS 1.3 both work.
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_context(ca_file)
            ctx.minimum_version = ctx.maximum_version = version
            assert (await https_get(rt, ctx, f"demo.{BASE}"))[0] == 200


async def test_sni_picks_the_names_certificate_and_changes_apply_to_new_handshakes(
    etcd_endpoint, etcd_prefix, edge_ca, tmp_path
):
    ca, ca_file = edge_ca
    async with https_router(etcd_endpoint, etcd_prefix, ca, tmp_path) as rt:
        ctx = client_context(ca_file)
        # A keep-alive connection opened before the change.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", https_port(rt), ssl=ctx, server_hostname=f"demo.{BASE}"
        )
        default = pki.edge_certificate(ca, [f"*.{BASE}"])
        www = pki.edge_certificate(ca, ["www.demo.org"])
        shop = pki.edge_certificate(ca, ["*.shop.test"])
        rt.router.plane.set_certificates(default, {"www.demo.org": www, "*.shop.test": shop})
        assert names((await https_get(rt, ctx, "www.demo.org"))[3]) == {"www.demo.org"}
        assert names((await https_get(rt, ctx, "a.shop.test"))[3]) == {"*.shop.test"}
        # A name without a certificate of its own gets the default.
        unverified = client_context(ca_file)
        unverified.check_hostname = False
        status, _, _, _ = await https_get(rt, unverified, "unknown.example.org")
        assert status == 404  # no such app, answered over TLS
        # The connection made before the change carries on.
        writer.write(f"GET / HTTP/1.1\r\nHost: demo.{BASE}\r\n\r\n".encode())
        assert (await read_response(reader)).status == 200
        writer.close()
        # A pair that does not match is refused whole, naming the host.
        with pytest.raises(ValueError, match=r"www\.demo\.org"):
            rt.router.plane.set_certificates(default, {"www.demo.org": (www[0], shop[1])})
        assert names((await https_get(rt, ctx, "www.demo.org"))[3]) == {"www.demo.org"}


async def serial_seen(rt: RunningRouter, ctx: ssl.SSLContext, host: str) -> int:
    """The serial number of the certificate the router serves for ``host``."""
    return int((await https_get(rt, ctx, host))[3]["serialNumber"], 16)


async def test_certificates_from_etcd_reach_every_router_without_a_restart(
    etcd_endpoint, etcd_prefix, edge_ca, tmp_path
):
    ca, ca_file = edge_ca
    ctx = client_context(ca_file)
    dyno = await Dyno("web.1").start()
    config = tls_config(etcd_endpoint, etcd_prefix, ca, tmp_path)
    async with (
        demo_router(etcd_endpoint, etcd_prefix, dyno, config) as first,
        start_router(config) as second,
        routes(etcd_endpoint, etcd_prefix) as r,
    ):
        await r.domain("www.demo.org", "demo")
        # A keep-alive connection made before any change.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", https_port(first), ssl=ctx, server_hostname=f"demo.{BASE}"
        )
        routers = (first, second)

        async def every_router_serves(serial: int) -> bool:
            try:
                seen = [await serial_seen(rt, ctx, "www.demo.org") for rt in routers]
            except ssl.SSLError:  # the default certificate does not name www.demo.org
                return False
            return seen == [serial] * len(routers)

        one = pki.edge_certificate(ca, ["www.demo.org"])
        await r.cert("www.demo.org", *one)
        serial_one = x509.load_pem_x509_certificate(one[0]).serial_number
        await eventually_async(lambda: every_router_serves(serial_one), timeout=10)
        # Replaced: every router moves to the new one.
        two = pki.edge_certificate(ca, ["www.demo.org"])
        await r.cert("www.demo.org", *two)
        serial_two = x509.load_pem_x509_certificate(two[0]).serial_number
        await eventually_async(lambda: every_router_serves(serial_two), timeout=10)
        # A record whose key is not the certificate's is skipped, not served.
        await r.cert("www.demo.org", two[0], one[1])
        await r.domain("shop.demo.org", "demo")
        shop = pki.edge_certificate(ca, ["shop.demo.org"])
        await r.cert("shop.demo.org", *shop)

        async def shop_served() -> bool:
            try:
                served = [names((await https_get(rt, ctx, "shop.demo.org"))[3]) for rt in routers]
            except ssl.SSLError:  # still the default certificate somewhere
                return False
            return served == [{"shop.demo.org"}] * len(routers)

        await eventually_async(shop_served, timeout=10)
        assert await every_router_serves(serial_two)
        # The connection made at the start carries on through every change.
        writer.write(f"GET / HTTP/1.1\r\nHost: demo.{BASE}\r\n\r\n".encode())
        assert (await read_response(reader)).status == 200
        writer.close()
        # Removed: back to the default certificate, which does not name it.
        await r.remove_cert("shop.demo.org")

        await eventually_async(lambda: name_not_served(first, ctx, "shop.demo.org"), timeout=10)
    await dyno.stop()


async def curl(*args: str) -> tuple[str, bytes]:
    """``curl ARGS`` (with nghttp2, as Debian builds it): the response head and body."""
    with tempfile.TemporaryDirectory() as tmp:
        head, body = Path(tmp) / "head", Path(tmp) / "body"
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-D", str(head), "-o", str(body), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")
        return head.read_text(errors="replace"), body.read_bytes()


async def chunked_dyno(req, reader, writer) -> bool:  # type: ignore[no-untyped-def]
    """Answers /chunked in chunks, echoing the request body's size."""
    if req.path != "/chunked":
        return False
    writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Got: %d\r\n\r\n"
                 % len(req.body))  # fmt: skip
    for piece in (b"one ", b"two ", b"three"):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def test_http2_clients_get_the_same_headers_codes_and_log_lines_as_http1(
    etcd_endpoint, etcd_prefix, nats_url, edge_ca, tmp_path
):
    ca, ca_file = edge_ca
    dyno = await Dyno("web.1", chunked_dyno).start()
    config = logged_tls_config(etcd_endpoint, etcd_prefix, nats_url, ca, tmp_path)
    tap = await LogTap().start(nats_url, "demo")
    try:
        async with demo_router(etcd_endpoint, etcd_prefix, dyno, config) as rt:
            port = https_port(rt)
            base = [
                "--cacert", str(ca_file),
                "--resolve", f"demo.{BASE}:{port}:127.0.0.1",
                "--resolve", f"nope.{BASE}:{port}:127.0.0.1",
            ]  # fmt: skip
            url = f"https://demo.{BASE}:{port}"
            head, body = await curl("--http2", *base, "-H", "X-Custom: a", f"{url}/two?x=1")
            assert head.startswith("HTTP/2 200") and body == b"hello from web.1"
            h2_seen = dyno.requests[-1]
            assert h2_seen.path == "/two?x=1" and h2_seen.headers["x-custom"] == "a"
            head, _ = await curl("--http1.1", *base, "-H", "X-Custom: a", f"{url}/one?x=1")
            assert head.startswith("HTTP/1.1 200")
            h1_seen = dyno.requests[-1]
            # The dyno cannot tell: the same headers (HTTP/1.1's connection ones aside).
            assert set(h2_seen.headers) == set(h1_seen.headers)
            for name in ("host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-for", "via"):
                assert h2_seen.headers[name] == h1_seen.headers[name]
            line = await tap.wait_for('path="/two?x=1"')
            assert "status=200" in line.message and "protocol=https" in line.message

            # A body up, a chunked answer down (re-framed as HTTP/2 DATA).
            upload = tmp_path / "upload.bin"
            upload.write_bytes(b"x" * 300_000)
            head, body = await curl(
                "--http2", *base, "--data-binary", f"@{upload}", f"{url}/chunked"
            )
            assert head.startswith("HTTP/2 201") and "x-got: 300000" in head.lower()
            assert body == b"one two three"
            assert len(dyno.requests[-1].body) == 300_000

            # Router errors: the same code, page and log line.
            head, body = await curl("--http2", *base, f"https://nope.{BASE}:{port}/missing")
            assert head.startswith("HTTP/2 404") and b"no such app" in body.lower()
            async with routes(etcd_endpoint, etcd_prefix) as r:
                await r.app("demo", web=0)  # scaled to zero: H14 at once
                await r.remove_dyno("demo", "web.1")
            await eventually_async(
                lambda: _status_is(curl("--http2", *base, f"{url}/gone"), "HTTP/2 503"),
                timeout=10,
            )
            line = await tap.wait_for('path="/gone"', "code=H14")
            assert "status=503" in line.message
    finally:
        await tap.stop()
        await dyno.stop()


async def _status_is(call, status: str) -> bool:  # type: ignore[no-untyped-def]
    head, _ = await call
    return head.startswith(status)
