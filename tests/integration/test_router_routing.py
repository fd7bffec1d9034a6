"""Several routers on one etcd: route changes, per-router quarantine, least-loaded
choice, and surviving an etcd outage."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter

import pytest

from slipway import errors
from slipway.engines import free_port
from tests.harness import secure
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import (
    Dyno,
    Req,
    request,
    router_config,
    routes,
    start_router,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def check(condition_fn):  # type: ignore[no-untyped-def]
    async def predicate() -> bool:
        return bool(condition_fn())

    return predicate


async def test_three_routers_pick_up_route_changes(etcd_endpoint, etcd_prefix):
    one, two = await Dyno("web.1").start(), await Dyno("web.2").start()
    config = router_config(etcd_endpoint, etcd_prefix)
    async with (
        routes(etcd_endpoint, etcd_prefix) as r,
        start_router(config) as a,
        start_router(config) as b,
        start_router(config) as c,
    ):
        routers = [a, b, c]
        await r.app("demo")
        await r.dyno("demo", one)

        async def everywhere(expected: set[bytes]) -> bool:
            for rt in routers:
                seen = {(await request(rt.port)).body for _ in range(6)}
                if seen != expected:
                    return False
            return True

        # a new app and dyno: routed by all three (generous bound, not a speed test)
        await eventually_async(lambda: everywhere({b"hello from web.1"}), timeout=10)
        await r.dyno("demo", two)
        await eventually_async(
            lambda: everywhere({b"hello from web.1", b"hello from web.2"}), timeout=10
        )
        await r.remove_dyno("demo", "web.1")
        await eventually_async(lambda: everywhere({b"hello from web.2"}), timeout=10)
        # removing the app makes it unknown everywhere
        await r.etcd.delete(r.keys.route_app("demo"))

        async def all_404() -> bool:
            return all([(await request(rt.port)).status == 404 for rt in routers])

        await eventually_async(all_404, timeout=10)
    await one.stop()
    await two.stop()


async def test_quarantine_is_per_router_and_clients_see_no_errors(etcd_endpoint, etcd_prefix):
    good = await Dyno("web.1").start()
    bad_address = f"127.0.0.1:{free_port()}"  # refuses connections
    config = router_config(etcd_endpoint, etcd_prefix, quarantine=30.0)
    async with (
        routes(etcd_endpoint, etcd_prefix) as r,
        start_router(config) as seer,
        start_router(config) as other,
    ):
        await r.app("demo", web=2)
        await r.dyno("demo", good)
        await r.dyno("demo", "web.2", address=bad_address)
        for rt in (seer, other):
            await eventually_async(
                check(lambda rt=rt: len(rt.router.table.dyno_list.get("demo", ())) == 2)
            )
        statuses = Counter()
        for _ in range(30):
            statuses[(await request(seer.port)).status] += 1
        assert statuses == {200: 30}  # refusals were retried on web.1
        assert bad_address in seer.router.plane.quarantined()
        assert seer.router.plane.counters()["quarantines"] == 1  # then skipped while quarantined
        # the other router never saw a refusal, so it quarantines nothing
        assert bad_address not in other.router.plane.quarantined()
        assert other.router.plane.counters()["quarantines"] == 0
    await good.stop()


async def test_least_loaded_avoids_the_slow_dyno(etcd_endpoint, etcd_prefix):
    release = asyncio.Event()

    async def slow(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        return False

    slow_dyno, fast_dyno = await Dyno("web.1", slow).start(), await Dyno("web.2").start()
    async with (
        routes(etcd_endpoint, etcd_prefix) as r,
        start_router(router_config(etcd_endpoint, etcd_prefix)) as rt,
    ):
        await r.app("demo", web=2, balance="least-loaded")
        await r.dyno("demo", slow_dyno)
        await r.dyno("demo", fast_dyno)
        await eventually_async(check(lambda: len(rt.router.table.dyno_list.get("demo", ())) == 2))
        stuck = [asyncio.create_task(request(rt.port)) for _ in range(3)]
        await eventually_async(check(lambda: len(slow_dyno.requests) >= 1))
        # with web.1 busy, every later request goes to the idle web.2
        before = len(slow_dyno.requests)
        bodies = Counter([(await request(rt.port)).body for _ in range(20)])
        assert bodies == {b"hello from web.2": 20}
        assert len(slow_dyno.requests) == before
        release.set()
        for task in stuck:
            assert (await task).status == 200
    await slow_dyno.stop()
    await fast_dyno.stop()


async def test_etcd_outage_keeps_last_table_and_catches_up(tmp_path, nats_url):
    etcd = secure.etcd_engine(tmp_path)
    etcd.start()
    endpoint = f"{etcd.host}:{etcd.port}"
    prefix = "/slipway-outage"
    await secure.seal_async([endpoint], prefix)
    one, two = await Dyno("web.1").start(), await Dyno("web.2").start()
    try:
        async with routes(endpoint, prefix) as r:
            await r.app("demo")
            await r.dyno("demo", one)
        async with start_router(router_config(endpoint, prefix)) as rt:
            assert (await request(rt.port)).body == b"hello from web.1"
            relists = rt.router.watcher.relists
            etcd.stop()
            await eventually_async(check(lambda: not rt.router.watcher.connected), timeout=20)
            # etcd is gone: the router keeps routing on its last table
            for _ in range(5):
                res = await request(rt.port)
                assert res.status == 200 and res.body == b"hello from web.1"
            etcd.start()

            async def write_changes() -> bool:
                # the test's own client may need a retry while etcd finishes starting
                try:
                    async with routes(endpoint, prefix) as r:
                        await r.remove_dyno("demo", "web.1")
                        await r.dyno("demo", two)
                        await r.app("other")
                except (errors.SlipwayError, OSError):
                    return False
                return True

            await eventually_async(write_changes, timeout=20, interval=0.2)
            # back: the router re-lists and sees what changed meanwhile
            await eventually_async(check(lambda: rt.router.watcher.relists > relists), timeout=20)
            await eventually_async(check(lambda: "other" in rt.router.table.apps), timeout=20)
            res = await request(rt.port)
            assert res.body == b"hello from web.2"
    finally:
        with contextlib.suppress(Exception):
            etcd.stop()
        await one.stop()
        await two.stop()


async def test_connect_timeout_quarantines_and_retries(etcd_endpoint, etcd_prefix):
    # A listener that never accepts, with its backlog filled: further SYNs are
    # dropped, so connecting to it hangs (the "not connected in 5 s" case).
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    address = f"127.0.0.1:{blackhole.getsockname()[1]}"
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(blackhole.getsockname())
        fillers.append(s)
    good = await Dyno("web.1").start()
    config = router_config(etcd_endpoint, etcd_prefix, connect_timeout=0.3, quarantine=30.0)
    try:
        async with (
            routes(etcd_endpoint, etcd_prefix) as r,
            start_router(config) as rt,
        ):
            await r.app("demo", web=2)
            await r.dyno("demo", good)
            await r.dyno("demo", "web.2", address=address)
            await eventually_async(
                check(lambda: len(rt.router.table.dyno_list.get("demo", ())) == 2)
            )
            results = [await request(rt.port) for _ in range(20)]
            assert [res.status for res in results] == [200] * 20
            assert {res.body for res in results} == {b"hello from web.1"}
            assert address in rt.router.plane.quarantined()
    finally:
        for s in fillers:
            s.close()
        blackhole.close()
        await good.stop()
