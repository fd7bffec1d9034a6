"""NATS on TLS: a real nats-server from ``engines.nats(tls=...)``, one user per role.

Each role does what its component does, through the component's own code
(LogSink, ObjectStoreFetch, LogShipper, BuildQueue, LogHub), and what it must
not do is refused by the server: the refusal is read from the server's
"Permissions Violation" notice for that very subject, so a test cannot pass
because of some other failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.js.api
import pytest
from nats.aio.client import Client as NATS

from agent.logs import LogSink
from agent.slugcache import ObjectStoreFetch
from builder.jobs import BuildQueue, QueueSettings
from builder.slug import SlugManifest
from controller.bus.logs import LogFilter, LogHub
from router.config import LogConfig
from router.logs import LogShipper
from slipway import buildproto, engines, errors, logline, natsauth, objstore, tls
from slipway.logline import LogLine, Origin
from slipway.pki import Bundle, Role
from tests.harness.pki import ClusterPKI
from tests.harness.wait import eventually_async

pytestmark = pytest.mark.integration

APP = "secure-app"


@pytest.fixture
def cluster_pki(tmp_path: Path) -> ClusterPKI:
    return ClusterPKI(tmp_path / "pki")


@pytest.fixture
def server(tmp_path: Path, cluster_pki: ClusterPKI) -> engines.Engine:
    engine = engines.nats(tmp_path / "nats", tls=cluster_pki.bundle(Role.ENGINE))
    engine.start()
    yield engine  # type: ignore[misc]
    engine.stop()


def url(engine: engines.Engine) -> str:
    return f"nats://{engine.host}:{engine.port}"


def bundle(cluster_pki: ClusterPKI, role: Role) -> Bundle:
    return cluster_pki.bundle(role, "n1" if role is Role.NODE else "")


@dataclass
class Client:
    """A connection as one role, with the server's error notices it received."""

    nc: NATS
    notices: list[str] = field(default_factory=list)

    def violated(self, subject: str) -> bool:
        return any(
            "permissions violation" in n.lower() and subject.lower() in n.lower()
            for n in self.notices
        )

    async def refused(self, subject: str, action: Callable[[], Awaitable[object]]) -> None:
        """``action`` fails, and the server says it was for ``subject``."""
        with pytest.raises(Exception):  # noqa: B017 - the notice below is the assertion
            await asyncio.wait_for(action(), 2.0)

        async def noticed() -> bool:
            assert self.violated(subject), f"no refusal of {subject} in {self.notices}"
            return True

        await eventually_async(noticed, 5)


@contextlib.asynccontextmanager
async def connect(
    server: engines.Engine, cluster_pki: ClusterPKI, role: Role
) -> AsyncIterator[Client]:
    client: Client | None = None

    async def on_error(exc: Exception) -> None:
        if client is not None:
            client.notices.append(str(exc))

    nc = await objstore.connect(
        [url(server)],
        name=f"test-{role.value}",
        credentials=bundle(cluster_pki, role),
        error_cb=on_error,
    )
    client = Client(nc)
    try:
        yield client
    finally:
        await nc.close()


@pytest.fixture
async def ready(server: engines.Engine, cluster_pki: ClusterPKI) -> engines.Engine:
    """Streams and buckets made by the controller, as in a running cluster."""
    async with connect(server, cluster_pki, Role.CONTROLLER) as ctl:
        js = ctl.nc.jetstream()
        await objstore.ObjectStores(js).ensure_buckets()
        await buildproto.ensure_streams(js)
        await logline.ensure_stream(js)
    return server


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def log_hub(server: engines.Engine, cluster_pki: ClusterPKI) -> AsyncIterator[LogHub]:
    hub = LogHub([url(server)], credentials=bundle(cluster_pki, Role.CONTROLLER))
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        yield hub
    finally:
        await cancel(task)


async def shown(hub: LogHub, app: str = APP) -> list[str]:
    """The app's log as ``slipway logs`` shows it (``source[process]: message``)."""
    async for batch in hub.read(app, 100, LogFilter(), tail=False):
        return [f"{line.source}[{line.process}]: {line.message}" for line in batch]
    return []


async def shows(hub: LogHub, text: str) -> None:
    async def there() -> bool:
        return text in await shown(hub)

    await eventually_async(there, 10)


def violations(engine: engines.Engine, connection: str) -> list[str]:
    """The server's log of refusals to the connection named ``connection``."""
    lines = engine.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if "Violation" in line and f':{connection}"' in line]


def blob(path: Path, content: bytes) -> tuple[Path, str]:
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


# -- who may connect ------------------------------------------------------------------


async def attempt(server: engines.Engine, context: ssl.SSLContext | None) -> None:
    options: dict[str, object] = {"tls": context} if context is not None else {}
    nc = await nats.connect(
        url(server),
        allow_reconnect=False,
        connect_timeout=3,
        **options,  # type: ignore[arg-type]
    )
    await nc.close()


async def test_clients_without_a_certificate_of_the_cluster_ca_are_refused(
    server: engines.Engine, cluster_pki: ClusterPKI
) -> None:
    # Plaintext: nats-py then tries TLS against the system CAs, which do not know ours.
    with pytest.raises(Exception):  # noqa: B017
        await attempt(server, None)
    # TLS that trusts the server but presents no certificate.
    with pytest.raises(Exception):  # noqa: B017
        await attempt(server, tls.client_context(None, ca_only=cluster_pki.ca_file))
    # A certificate of another CA (trusting our server's CA, so only its own cert is wrong).
    foreign = tls.client_context(cluster_pki.foreign())
    foreign.load_verify_locations(cafile=str(cluster_pki.ca_file))
    with pytest.raises(Exception):  # noqa: B017
        await attempt(server, foreign)
    # The ENGINE certificate maps to no client user.
    with pytest.raises(Exception):  # noqa: B017
        await attempt(server, tls.client_context(cluster_pki.bundle(Role.ENGINE)))
    # And the controller's gets in.
    await attempt(server, tls.client_context(bundle(cluster_pki, Role.CONTROLLER)))


def test_the_config_file_keeps_the_storage_cap_and_opens_no_monitoring(
    tmp_path: Path, cluster_pki: ClusterPKI
) -> None:
    engine = engines.nats(
        tmp_path / "capped", tls=cluster_pki.bundle(Role.ENGINE), max_store_bytes=1 << 20
    )
    text = (engine.data_dir / "nats.conf").read_text()
    assert "max_file_store: 1048576" in text
    assert "verify_and_map: true" in text
    assert "no_auth_user" not in text
    assert not any(a.startswith(("-m", "--http")) for a in engine.argv)


def test_the_deploy_example_with_the_generated_users_is_a_valid_config(
    tmp_path: Path, cluster_pki: ClusterPKI, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = cluster_pki.bundle(Role.ENGINE)
    assert natsauth.main([str(engine.path)]) == 0
    (tmp_path / "slipway-auth.conf").write_text(capsys.readouterr().out)
    example = (Path(__file__).parents[2] / "deploy" / "config" / "nats-cluster.conf").read_text()
    conf = tmp_path / "nats-cluster.conf"
    conf.write_text(
        example.replace("/etc/slipway/engine", str(engine.path)).replace(
            "/var/lib/nats", str(tmp_path / "store")
        )
    )
    checked = subprocess.run(
        [engines.find_binary("nats-server"), "--config", str(conf), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- node -----------------------------------------------------------------------------


async def test_node_publishes_dyno_lines_and_reads_slugs_only(
    ready: engines.Engine, cluster_pki: ClusterPKI, tmp_path: Path
) -> None:
    path, digest = blob(tmp_path / "slug.tgz", b"a slug" * 1000)
    async with connect(ready, cluster_pki, Role.CONTROLLER) as ctl:
        await objstore.ObjectStores(ctl.nc.jetstream()).put_file(objstore.SLUGS, digest, path)

    fetch = ObjectStoreFetch([url(ready)], credentials=bundle(cluster_pki, Role.NODE))
    try:
        await fetch(digest, tmp_path / "fetched.tgz")
    finally:
        await fetch.close()
    assert (tmp_path / "fetched.tgz").read_bytes() == path.read_bytes()

    sink = LogSink([url(ready)], credentials=bundle(cluster_pki, Role.NODE))
    sink.emit(APP, "app", "web.1", "hello from the dyno")
    sink.emit(APP, "heroku", "web.1", "State changed from starting to up")
    shipping = asyncio.create_task(sink.run())
    try:
        async with log_hub(ready, cluster_pki) as hub:
            await shows(hub, "app[web.1]: hello from the dyno")
            await shows(hub, "heroku[web.1]: State changed from starting to up")
            assert not violations(ready, "slipway-agent-slugs")
            assert not violations(ready, "slipway-agent-logs")

            async with connect(ready, cluster_pki, Role.NODE) as node:
                # Its own subject, but a line only the router writes: dropped by readers.
                forged = LogLine(APP, "heroku", "router", "at=info forged by a node", 0.0)
                await node.nc.publish(logline.subject(APP, Origin.NODE), forged.encode())
                await node.nc.publish(
                    logline.subject(APP, Origin.NODE),
                    LogLine(APP, "app", "web.1", "after the forgery").encode(),
                )
                await shows(hub, "app[web.1]: after the forgery")
                assert not any("forged" in line for line in await shown(hub))

                router_subject = logline.subject(APP, Origin.ROUTER)
                await node.refused(
                    router_subject, lambda: _publish_flushed(node.nc, router_subject)
                )
                stores = objstore.ObjectStores(node.nc.jetstream(), create=False)
                await node.refused(
                    f"$O.{objstore.SLUGS}.C.",
                    lambda: stores.put_file(objstore.SLUGS, "f" * 64, path),
                )
                await node.refused(
                    f"STREAM.INFO.OBJ_{objstore.SOURCES}",
                    lambda: stores.get_file(objstore.SOURCES, "b1", tmp_path / "src"),
                )
                await node.refused(
                    logline.app_filter(APP), lambda: _subscribe(node.nc, logline.app_filter(APP))
                )
    finally:
        await cancel(shipping)


async def _publish_flushed(nc: NATS, subject: str) -> None:
    await nc.publish(subject, LogLine(APP, "heroku", "router", "x").encode())
    await nc.flush()
    await asyncio.sleep(3)  # the refusal comes as a notice; wait_for(2 s) ends this


async def _subscribe(nc: NATS, subject: str) -> None:
    await nc.subscribe(subject)
    await nc.flush()
    await asyncio.sleep(3)


# -- router ---------------------------------------------------------------------------


async def test_router_only_publishes_router_lines(
    ready: engines.Engine, cluster_pki: ClusterPKI, tmp_path: Path
) -> None:
    shipper = LogShipper(
        LogConfig(servers=(url(ready),), flush_interval=0.01),
        credentials=bundle(cluster_pki, Role.ROUTER),
    )
    shipper.emit(APP, "at=info method=GET path=/ status=200")
    shipping = asyncio.create_task(shipper.run())
    try:
        async with log_hub(ready, cluster_pki) as hub:
            await shows(hub, "heroku[router]: at=info method=GET path=/ status=200")
            assert not violations(ready, "slipway-router")

            async with connect(ready, cluster_pki, Role.ROUTER) as router:
                # A dyno's line on the router's own subject is not believed.
                await router.nc.publish(
                    logline.subject(APP, Origin.ROUTER),
                    LogLine(APP, "app", "web.1", "forged by the router").encode(),
                )
                shipper.emit(APP, "at=info after the forgery")
                await shows(hub, "heroku[router]: at=info after the forgery")
                assert not any("forged" in line for line in await shown(hub))

                node_subject = logline.subject(APP, Origin.NODE)
                await router.refused(
                    node_subject, lambda: _publish_flushed(router.nc, node_subject)
                )
                await router.refused("logs.>", lambda: _subscribe(router.nc, "logs.>"))
                # Every read needs a reply subscription, which the router may not have.
                await router.refused(
                    "_INBOX.router", lambda: router.nc.jetstream().stream_info(logline.STREAM)
                )

        fetch = ObjectStoreFetch([url(ready)], credentials=bundle(cluster_pki, Role.ROUTER))
        try:
            with pytest.raises(Exception):  # noqa: B017
                await asyncio.wait_for(fetch("0" * 64, tmp_path / "slug"), 3)
        finally:
            await fetch.close()
    finally:
        await cancel(shipping)


# -- builder --------------------------------------------------------------------------


class SlugFromSource:
    """A build step without a sandbox: the slug is the source, the cache grows a line.
    What it does on NATS is what BuildRunner does: get the source and the cache,
    put the cache and the slug."""

    def __init__(self, stores: objstore.ObjectStores, work: Path) -> None:
        self.stores = stores
        self.work = work

    async def run(
        self, job: buildproto.BuildJob, attempt: int, out: Callable[[str], Awaitable[None]]
    ) -> SlugManifest:
        src = self.work / f"{job.build_id}.src"
        await self.stores.get_file(objstore.SOURCES, job.source, src)
        cache = self.work / f"{job.app}.cache"
        with contextlib.suppress(errors.NotFound):
            await self.stores.get_file(objstore.CACHES, job.app, cache)
        with open(cache, "ab") as fh:
            fh.write(b"built once\n")
        await self.stores.put_file(objstore.CACHES, job.app, cache)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        await self.stores.put_file(objstore.SLUGS, digest, src)
        await out("-----> compiled")
        return SlugManifest(digest, src.stat().st_size, "test", {"web": "serve"}, None)


async def test_builder_takes_jobs_and_writes_slugs_but_reads_no_logs(
    ready: engines.Engine, cluster_pki: ClusterPKI, tmp_path: Path
) -> None:
    source, digest = blob(tmp_path / "source.tgz", b"the app's source" * 500)
    job = buildproto.BuildJob("build-1", APP, "build-1")
    async with connect(ready, cluster_pki, Role.CONTROLLER) as ctl:
        await objstore.ObjectStores(ctl.nc.jetstream()).put_file(
            objstore.SOURCES, "build-1", source
        )
        await buildproto.submit(ctl.nc.jetstream(), job)

    async with (
        connect(ready, cluster_pki, Role.BUILDER) as builder,
        log_hub(ready, cluster_pki) as hub,
    ):
        stores = objstore.ObjectStores(builder.nc.jetstream(), create=False)
        work = tmp_path / "work"
        work.mkdir()
        queue = BuildQueue(
            builder.nc,
            SlugFromSource(stores, work),  # type: ignore[arg-type]
            name="b1",
            settings=QueueSettings(create_streams=False),
        )
        building = asyncio.create_task(queue.run())
        try:
            js = hub.nc.jetstream()

            async def status() -> str:
                try:
                    msg = await js.get_last_msg(
                        buildproto.EVENTS_STREAM, buildproto.status_subject("build-1")
                    )
                except Exception:
                    return ""
                return buildproto.BuildStatus.decode(msg.data).status

            assert await eventually_async(lambda: _is(status, buildproto.SUCCEEDED), 20), (
                builder.notices
            )
            output = await js.get_last_msg(
                buildproto.EVENTS_STREAM, buildproto.output_subject("build-1")
            )
            assert buildproto.OutputLine.decode(output.data).line == "-----> Build succeeded"
            await shows(hub, "api[build]: Build build-1 succeeded")
            assert not builder.notices, builder.notices

            # A node can run what the builder made.
            fetch = ObjectStoreFetch([url(ready)], credentials=bundle(cluster_pki, Role.NODE))
            try:
                await fetch(digest, tmp_path / "slug")
            finally:
                await fetch.close()
            assert (tmp_path / "slug").read_bytes() == source.read_bytes()

            bjs = builder.nc.jetstream()
            await builder.refused(
                "CONSUMER.CREATE.LOGS",
                lambda: bjs.subscribe(
                    logline.app_filter(APP), stream=logline.STREAM, ordered_consumer=True
                ),
            )
            await builder.refused("logs.>", lambda: _subscribe(builder.nc, "logs.>"))
            await builder.refused(
                "STREAM.CREATE.EVIL",
                lambda: bjs.add_stream(nats.js.api.StreamConfig(name="EVIL", subjects=["evil"])),
            )
            await builder.refused(
                buildproto.JOBS_SUBJECT, lambda: bjs.publish(buildproto.JOBS_SUBJECT, b"{}")
            )
            router_subject = logline.subject(APP, Origin.ROUTER)
            await builder.refused(
                router_subject, lambda: _publish_flushed(builder.nc, router_subject)
            )
        finally:
            await cancel(building)


async def _is(current: Callable[[], Awaitable[str]], wanted: str) -> bool:
    return await current() == wanted


async def test_streams_missing_are_waited_for_not_created(
    server: engines.Engine, cluster_pki: ClusterPKI
) -> None:
    """Before the controller made them, a builder finds no stream and says who makes it."""
    async with connect(server, cluster_pki, Role.BUILDER) as builder:
        with pytest.raises(errors.Unavailable, match="the controller creates it"):
            await buildproto.ensure_streams(builder.nc.jetstream(), create=False)
        stores = objstore.ObjectStores(builder.nc.jetstream(), create=False)
        with pytest.raises(errors.Unavailable, match="OBJ_slugs"):
            await stores.ensure_buckets()
        assert not builder.notices


# -- a cluster ------------------------------------------------------------------------


async def test_three_servers_form_a_cluster_over_tls(
    tmp_path: Path, cluster_pki: ClusterPKI
) -> None:
    engine_bundle = cluster_pki.bundle(Role.ENGINE)
    ports = [engines.free_port() for _ in range(3)]
    routes = [f"nats://127.0.0.1:{p}" for p in ports]
    servers = [
        engines.nats(
            tmp_path / f"n{i}",
            cluster_port=ports[i],
            routes=[r for j, r in enumerate(routes) if j != i],
            server_name=f"n{i}",
            tls=engine_bundle,
        )
        for i in range(3)
    ]
    try:
        for s in servers:
            s.start()
        async with connect(servers[0], cluster_pki, Role.CONTROLLER) as ctl:
            js = ctl.nc.jetstream()

            async def answers() -> bool:
                # A forming cluster's JetStream answers once it has a meta leader.
                with contextlib.suppress(Exception):
                    return bool(await js.account_info())
                return False

            await eventually_async(answers, 30)
            await logline.ensure_stream(js, 3)
            info = await js.stream_info(logline.STREAM)
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2
            placed = {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])}
            assert placed == {"n0", "n1", "n2"}
        # A line published on one server is read through another.
        async with connect(servers[2], cluster_pki, Role.NODE) as node:
            await node.nc.publish(
                logline.subject(APP, Origin.NODE),
                LogLine(APP, "app", "web.1", "across the cluster").encode(),
            )
            await node.nc.flush()
        async with log_hub(servers[1], cluster_pki) as hub:
            await shows(hub, "app[web.1]: across the cluster")

        # A server holding a certificate of the CA, but not the engines' one, is no route.
        intruder = engines.nats(
            tmp_path / "intruder",
            cluster_port=engines.free_port(),
            routes=[routes[0]],
            server_name="intruder",
            tls=bundle(cluster_pki, Role.NODE),
        )
        servers.append(intruder)
        before = servers[0].log_path.stat().st_size
        intruder.start()

        async def refused() -> bool:
            log = servers[0].log_path.read_bytes()[before:]
            return b"Router connection closed: Authentication Failure" in log

        await eventually_async(refused, 10)
    finally:
        for s in servers:
            s.stop()
