"""Automated certificates against a real ACME server (Pebble): the leader's loop
orders over HTTP-01, a real router answers the challenge from etcd and then
serves the certificate; renewal and retries are driven by a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.core import acme as core
from controller.core.sizes import SizeTable
from controller.loops.acme import AcmeLoop, AcmeSettings
from controller.loops.leader import Leadership
from controller.store.acme import AcmeStore
from controller.store.domains import Domains
from controller.store.state import State
from slipway import pki
from slipway.clock import FakeClock
from slipway.etcd import Etcd
from slipway.keys import Keys
from tests.harness import secure
from tests.harness.controller import ControllerProcess
from tests.harness.pebble import Pebble
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import (
    Dyno,
    RunningRouter,
    request,
    routes,
    start_router,
)
from tests.integration.test_router_tls import https_get, names, tls_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@dataclass
class Edge:
    """A router for app demo (one dyno), Pebble checking challenges on its port."""

    router: RunningRouter
    pebble: Pebble
    ctx: ssl.SSLContext  # trusts the certificates Pebble issues
    dyno: Dyno
    endpoint: str
    prefix: str

    async def route_demo(self) -> None:
        """Demo's route and dyno, as the controller and an agent would write them
        once it is released and running (after apps:create, which writes its own)."""
        async with routes(self.endpoint, self.prefix) as r:
            await r.app("demo")
            await r.dyno("demo", self.dyno)

    async def serial(self, host: str) -> int:
        return int((await https_get(self.router, self.ctx, host))[3]["serialNumber"], 16)


@contextlib.asynccontextmanager
async def edge(etcd_endpoint: str, etcd_prefix: str, tmp: Path) -> AsyncIterator[Edge]:
    ca = pki.init_ca(tmp / "edge-ca")
    dyno = await Dyno("web.1").start()
    try:
        async with start_router(tls_config(etcd_endpoint, etcd_prefix, ca, tmp)) as rt:
            pebble = Pebble(tmp / "pebble", http_port=rt.port).start()
            try:
                ctx = ssl.create_default_context(cadata=pebble.root_pem().decode())
                yield Edge(rt, pebble, ctx, dyno, etcd_endpoint, etcd_prefix)
            finally:
                pebble.stop()
    finally:
        await dyno.stop()


@dataclass
class Leader:
    state: State
    domains: Domains
    store: AcmeStore
    loop: AcmeLoop
    clock: FakeClock


@contextlib.asynccontextmanager
async def leader(etcd_endpoint: str, etcd_prefix: str, pebble: Pebble) -> AsyncIterator[Leader]:
    keys = Keys(etcd_prefix)
    async with Etcd([etcd_endpoint], credentials=secure.bundle(pki.Role.CONTROLLER)) as etcd:
        state = State(etcd, keys, SizeTable())
        domains = Domains(state, "localhost", secure.bundle(pki.Role.CONTROLLER).sealer())
        store = AcmeStore(state)
        leadership = Leadership(etcd, keys, "me")
        leadership._set(True)
        clock = FakeClock(time.time())
        settings = AcmeSettings(
            pebble.directory, context=pebble.context(), propagation=0.2, poll_interval=0.2
        )
        loop = AcmeLoop(domains, store, leadership, settings, clock=clock)
        yield Leader(state, domains, store, loop, clock)


async def test_certificates_are_issued_over_http01_renewed_and_failures_retried(
    etcd_endpoint: str, etcd_prefix: str, tmp_path: Path
) -> None:
    async with (
        edge(etcd_endpoint, etcd_prefix, tmp_path) as e,
        leader(etcd_endpoint, etcd_prefix, e.pebble) as ld,
    ):
        await ld.state.create_app("demo")
        await e.route_demo()
        await ld.domains.add_domain("demo", "www.demo.org")
        await ld.domains.add_domain("demo", "*.demo.org")
        await ld.store.enable("demo")

        todo = await ld.loop.step()
        assert todo.order == [("demo", "www.demo.org")]
        statuses = await ld.store.statuses("demo")
        issued = statuses[("demo", "www.demo.org")]
        assert issued.status == core.ISSUED and issued.last_error == ""
        # A wildcard cannot be proved over HTTP-01: it says so and is not ordered.
        assert statuses[("demo", "*.demo.org")].last_error == core.WILDCARD_REASON
        status, _, body, peer = await https_get(e.router, e.ctx, "www.demo.org")
        assert status == 200 and body == b"hello from web.1"
        assert names(peer) == {"www.demo.org"}
        first = await e.serial("www.demo.org")
        # The challenge was withdrawn: the path goes to the app again.
        assert e.router.router.table.challenges == {}
        assert e.router.router.plane.counters()["acme_answers"] >= 1

        # Nothing is due until the renewal point...
        assert (await ld.loop.step()).order == []
        ld.clock.advance(issued.not_after - ld.clock.now() - core.RENEW_BEFORE - 60)
        assert (await ld.loop.step()).order == []
        # ...and past it the certificate is replaced, on the router too.
        ld.clock.advance(120)
        assert (await ld.loop.step()).order == [("demo", "www.demo.org")]

        async def renewed() -> bool:
            return await e.serial("www.demo.org") != first

        await eventually_async(renewed, timeout=10)
        # Back to the present, where the new certificate is not due for 60 days.
        ld.clock.advance(time.time() - ld.clock.now())
        assert (await ld.loop.step()).order == []

        # A domain whose DNS points where no router answers: the order fails,
        # the error is kept, and it is tried again once the backoff has passed.
        e.pebble.point("shop.demo.org", "127.0.0.2")
        await ld.domains.add_domain("demo", "shop.demo.org")
        assert (await ld.loop.step()).order == [("demo", "shop.demo.org")]
        failing = (await ld.store.statuses("demo"))[("demo", "shop.demo.org")]
        assert failing.status == core.FAILING and failing.attempts == 1
        assert "127.0.0.2" in failing.last_error
        e.pebble.unpoint("shop.demo.org")
        assert (await ld.loop.step()).order == []  # backing off
        ld.clock.advance(core.backoff(1) + 1)
        assert (await ld.loop.step()).order == [("demo", "shop.demo.org")]
        fixed = (await ld.store.statuses("demo"))[("demo", "shop.demo.org")]
        assert fixed.status == core.ISSUED and fixed.attempts == 0
        assert names((await https_get(e.router, e.ctx, "shop.demo.org"))[3]) == {"shop.demo.org"}

        # Off: the ACME certificates go, and with them what the router serves.
        await ld.store.disable("demo")
        assert await ld.domains.remove_auto_certs("demo") == [
            "acme-shop-demo-org",
            "acme-www-demo-org",
        ]
        assert await ld.store.statuses("demo") == {}


async def test_certs_auto_enable_from_the_cli_until_domains_wait_says_ready(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> None:
    async with edge(etcd_endpoint, etcd_prefix, tmp_path) as e:
        controller = ControllerProcess(
            etcd_endpoint,
            etcd_prefix,
            tmp_path / "controller",
            nats_url,
            extra_args=[
                "--acme-directory", e.pebble.directory,
                "--acme-ca-file", str(e.pebble.ca_file),
            ],
        )  # fmt: skip
        await asyncio.to_thread(controller.start)
        try:

            async def cli(*args: str, check: bool = True) -> str:
                done = await asyncio.to_thread(controller.cli, *args, check=check)
                return done.stdout + done.stderr

            await cli("apps:create", "demo")
            await e.route_demo()
            off = await cli("certs:auto", "-a", "demo")
            assert "Automated certificates are off for demo" in off
            await cli("domains:add", "www.demo.org", "-a", "demo")
            out = await cli("certs:auto:enable", "-a", "demo")
            assert "Enabling automated certificates for demo... done" in out
            assert "www.demo.org is ready" in await cli(
                "domains:wait", "www.demo.org", "-a", "demo"
            )
            shown = await cli("certs:auto", "-a", "demo")
            assert "www.demo.org" in shown and "issued" in shown
            listed = await cli("certs", "-a", "demo")
            assert "acme-www-demo-org" in listed
            assert names((await https_get(e.router, e.ctx, "www.demo.org"))[3]) == {"www.demo.org"}
            # Plain HTTP to the app is untouched by all this.
            assert (await request(e.router.port, "/", host="www.demo.org")).status == 200
        finally:
            await asyncio.to_thread(controller.stop)
