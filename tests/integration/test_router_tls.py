"""HTTPS at the router: real TLS handshakes from Python's ssl (OpenSSL) against
the data plane's rustls, certificates from a CA made here."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
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
    config = replace(
        tls_config(etcd_endpoint, etcd_prefix, ca, tmp_path),
        logs=replace(router_config(etcd_endpoint, etcd_prefix, nats_url).logs),
    )
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
