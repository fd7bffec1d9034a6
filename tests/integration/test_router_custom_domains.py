"""Custom domains and uploaded certificates, end to end: the CLI against a real
controller, etcd in between, and a real router serving the result over TLS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from slipway import pki
from slipway.keys import Keys
from tests.harness.controller import ControllerProcess
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import BASE, Dyno, routes, start_router
from tests.integration.test_router_tls import (
    client_context,
    https_get,
    name_not_served,
    names,
    tls_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def cli(controller: ControllerProcess, *args: str, check: bool = True) -> str:
    """``slipway ARGS`` off the event loop (the router in this test runs on it)."""
    result = await asyncio.to_thread(controller.cli, *args, check=check)
    return result.stdout + result.stderr


def write_pair(tmp: Path, name: str, pair: tuple[bytes, bytes]) -> tuple[str, str]:
    (tmp / f"{name}.crt").write_bytes(pair[0])
    (tmp / f"{name}.key").write_bytes(pair[1])
    return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")


async def test_custom_domains_route_and_serve_their_uploaded_certificates(
    controller: ControllerProcess, etcd_endpoint: str, etcd_prefix: str, tmp_path: Path
) -> None:
    ca = pki.init_ca(tmp_path / "ca", common="their CA")
    ctx = client_context(tmp_path / "ca" / "ca.crt")
    for app in ("demo", "other"):
        await cli(controller, "apps:create", app)
    out = await cli(controller, "domains:add", "www.demo.org", "-a", "demo")
    assert "Configure your DNS provider to point www.demo.org" in out
    assert "demo.localhost" in out  # the DNS target: the app's default domain
    await cli(controller, "domains:add", "*.shop.test", "-a", "demo")
    # A host name belongs to one app only.
    refused = await cli(controller, "domains:add", "WWW.demo.org", "-a", "other", check=False)
    assert "www.demo.org is already in use by another app" in refused
    listed = json.loads(await cli(controller, "domains", "-a", "demo", "--json"))
    assert [(d["hostname"], d["kind"]) for d in listed] == [
        ("demo.localhost", "default"),
        ("*.shop.test", "custom"),
        ("www.demo.org", "custom"),
    ]

    www = write_pair(tmp_path, "www", pki.edge_certificate(ca, ["www.demo.org"]))
    shop = write_pair(tmp_path, "shop", pki.edge_certificate(ca, ["*.shop.test"]))
    out = await cli(controller, "certs:add", *www, "-a", "demo")
    assert "Adding certificate www-demo-org to demo... done" in out
    assert "Served for:         www.demo.org" in out
    await cli(controller, "certs:add", *shop, "-a", "demo")
    # Another app cannot serve a certificate for a name it does not hold.
    refused = await cli(controller, "certs:add", *www, "-a", "other", check=False)
    assert "covers none of other's domains" in refused

    keys = Keys(etcd_prefix)
    async with routes(etcd_endpoint, etcd_prefix) as r:
        # What routers read: the private key is not in it, only sealed.
        stored = await r.etcd.get(keys.route_cert("www.demo.org"))
        assert stored is not None
        record = json.loads(stored.value)
        assert "key" not in record and record["key_sealed"].startswith("v1.")
        assert Path(www[1]).read_bytes().split(b"\n")[1] not in stored.value
        # The app's dyno, as an agent would announce it.
        dyno = await Dyno("web.1").start()
        await r.app("demo")
        await r.dyno("demo", dyno)
        config = tls_config(etcd_endpoint, etcd_prefix, ca, tmp_path)
        try:
            async with start_router(config) as rt:

                async def served(host: str) -> set[str]:
                    status, _, body, peer = await https_get(rt, ctx, host)
                    assert status == 200 and body == b"hello from web.1"
                    return names(peer)

                assert await served("www.demo.org") == {"www.demo.org"}
                # The wildcard domain routes every name one label under it.
                assert await served("a.shop.test") == {"*.shop.test"}
                assert await served(f"demo.{BASE}") == {f"*.{BASE}"}
                info = await cli(controller, "certs:info", "--name", "star-shop-test", "-a", "demo")
                assert "Served for:         *.shop.test" in info

                # Removed: the name falls back to the default certificate.
                await cli(controller, "certs:remove", "--name", "www-demo-org", "-a", "demo")

                await eventually_async(lambda: name_not_served(rt, ctx, "www.demo.org"), timeout=10)
                await cli(controller, "domains:remove", "www.demo.org", "-a", "demo")
                loose = client_context(tmp_path / "ca" / "ca.crt")
                loose.check_hostname = False

                async def unrouted() -> bool:
                    return (await https_get(rt, loose, "www.demo.org"))[0] == 404

                await eventually_async(unrouted, timeout=10)
                # Now free for the other app.
                await cli(controller, "domains:add", "www.demo.org", "-a", "other")
        finally:
            await dyno.stop()
        # Destroying the app releases its domains and their certificates.
        await cli(controller, "apps:destroy", "-a", "demo", "--confirm", "demo")
        assert await r.etcd.get(keys.route_domain("*.shop.test")) is None
        assert await r.etcd.get(keys.route_cert("*.shop.test")) is None
        assert await r.etcd.get(keys.route_domain("www.demo.org")) is not None  # other's


async def test_bad_domains_and_certificates_are_refused_with_the_reason(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    ca = pki.init_ca(tmp_path / "ca", common="their CA")
    await cli(controller, "apps:create", "demo")
    for host, says in [
        ("localhost", "not a full host name"),
        ("*.com", "wildcard covers names under a domain"),
        ("shop.localhost", "under the platform's own domain"),
        ("bad_name.example.com", "'bad_name' is not a label"),
    ]:
        assert says in await cli(controller, "domains:add", host, "-a", "demo", check=False)
    await cli(controller, "domains:add", "www.demo.org", "-a", "demo")
    again = await cli(controller, "domains:add", "www.demo.org", "-a", "demo", check=False)
    assert "already a domain of demo" in again
    chain, key = pki.edge_certificate(ca, ["www.demo.org"])
    _, other_key = pki.edge_certificate(ca, ["www.demo.org"])
    mismatched = write_pair(tmp_path, "bad", (chain, other_key))
    out = await cli(controller, "certs:add", *mismatched, "-a", "demo", check=False)
    assert "the private key does not belong to the certificate" in out
    missing = await cli(
        controller, "certs:add", str(tmp_path / "none.crt"), str(tmp_path / "none.key"),
        "-a", "demo", check=False,
    )  # fmt: skip
    assert "cannot read the certificate chain" in missing
    good = write_pair(tmp_path, "good", (chain, key))
    await cli(controller, "certs:add", *good, "-a", "demo")
    await cli(controller, "certs:add", *good, "-a", "demo")
    # Two now: the CLI asks which one.
    which = await cli(controller, "certs:info", "-a", "demo", check=False)
    assert "choose one with --name (www-demo-org, www-demo-org-2)" in which
    unknown = await cli(controller, "domains:remove", "nope.demo.org", "-a", "demo", check=False)
    assert "demo has no domain nope.demo.org" in unknown
