"""slipway-builder: one member of the builder pool.

Load flags, set up logging, prepare the sandbox stack, then run the job queue
in one TaskGroup. First SIGTERM/SIGINT: take no new job and let the builds in
hand finish for up to --drain-timeout; then (or on a second signal) cancel
them, which hands each job back to the queue (nak) for another builder.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
from pathlib import Path

import click
from nats.aio.client import Client as NATS

from builder.build import BuildRunner, Limits
from builder.cachecopy import LocalCaches
from builder.jobs import BuildQueue, QueueSettings
from builder.sandbox import DEFAULT_MEMORY_MB, DEFAULT_PIDS, RuncSandbox
from slipway import archive, buildproto, conffile, errors, log, objstore, sdnotify, tls
from slipway.backoff import Backoff
from slipway.cni import SandboxNetwork
from slipway.cni.sandboxnet import resolv_conf_text, resolvers
from slipway.pki import Bundle
from slipway.stackimage import DEFAULT_STACK, open_stack, stack_option

_log = log.get("builder")


async def serve(
    *,
    servers: list[str],
    data_dir: Path,
    name: str,
    slots: int,
    limits: Limits,
    settings: QueueSettings,
    memory_mb: int,
    pids: int,
    drain_timeout: float,
    build_network: str = "isolated",
    credentials: Bundle | None = None,
    stack: str = DEFAULT_STACK,
) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    network = SandboxNetwork(data_dir / "net") if build_network == "isolated" else None
    # Inside its own netns a step cannot use a resolver on the host's loopback.
    resolv = resolv_conf_text(resolvers()) if network is not None else None
    sandbox = RuncSandbox(
        data_dir / "sandbox",
        open_stack(stack, "build", data_dir, resolv_conf=resolv),
        memory_mb=memory_mb,
        pids=pids,
        network=network,
    )
    await sandbox.prepare()
    nc = await objstore.connect(servers, name=f"slipway-builder-{name}", credentials=credentials)
    # With credentials the controller creates streams and buckets: wait for them.
    create = credentials is None
    settings = dataclasses.replace(settings, create_streams=create)
    stores = objstore.ObjectStores(nc.jetstream(), replicas=settings.replicas, create=create)
    await _wait_for_streams(stores, nc, settings)
    runner = BuildRunner(
        stores, sandbox, data_dir / "builds", limits, LocalCaches(data_dir / "caches")
    )
    queue = BuildQueue(nc, runner, name=name, slots=slots, settings=settings)

    loop = asyncio.get_running_loop()
    signals = 0
    stop = asyncio.Event()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        queue.stop_accepting()
        if signals == 1:
            sdnotify.stopping()
            _log.info("draining", node=name, busy=queue.busy)
        else:
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with asyncio.TaskGroup() as tg:
            work = tg.create_task(queue.run())
            notify = tg.create_task(_notify_ready(queue, name))
            drained = tg.create_task(_drain_watch(queue, stop, drain_timeout))
            await asyncio.wait({work, drained}, return_when=asyncio.FIRST_COMPLETED)
            # Either every slot stopped after draining, or the drain gave up:
            # cancelling hands unfinished jobs back.
            work.cancel()
            drained.cancel()
            notify.cancel()
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await nc.drain()
        _log.info("builder stopped", node=name)


async def _wait_for_streams(
    stores: objstore.ObjectStores, nc: NATS, settings: QueueSettings
) -> None:
    """Buckets and build streams: made here (plaintext), or waited for until the
    controller made them (TLS: a builder may not create streams)."""
    backoff = Backoff(initial=0.5, maximum=10.0)
    while True:
        try:
            await stores.ensure_buckets()
            await buildproto.ensure_streams(
                nc.jetstream(), replicas=settings.replicas, create=settings.create_streams
            )
            return
        except errors.Unavailable as exc:
            _log.warning("waiting for the object store", error=str(exc))
            await asyncio.sleep(backoff.next())


async def _notify_ready(queue: BuildQueue, name: str) -> None:
    """systemd Type=notify: ready once the work-queue consumer is bound."""
    await queue.ready.wait()
    sdnotify.ready(f"builder {name} taking jobs")


async def _drain_watch(queue: BuildQueue, stop: asyncio.Event, drain_timeout: float) -> None:
    """Returns when a second signal came, or drain_timeout after the first one."""
    while True:
        await asyncio.sleep(0.2)
        if stop.is_set():
            return
        if not queue.accepting:
            break
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(drain_timeout):
            await stop.wait()


@click.command(context_settings={"auto_envvar_prefix": "SLIPWAY_BUILDER"})
@conffile.config_option("SLIPWAY_BUILDER_CONFIG")
@click.option(
    "--nats",
    "nats_servers",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help="NATS servers, comma separated.",
)
@click.option(
    "--nats-replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Copies JetStream keeps of the build streams and buckets this builder creates "
    "(3 on a 3-server NATS cluster).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("/var/lib/slipway/builder"),
    show_default=True,
    help="Work directories, sandbox state, stack rootfs.",
)
@click.option(
    "--name",
    default=socket.gethostname,
    show_default="host name",
    help="Builder name reported in build statuses.",
)
@click.option(
    "--slots",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Builds run at the same time.",
)
@click.option(
    "--build-timeout",
    type=float,
    default=15 * 60.0,
    show_default=True,
    help="Compile time limit in seconds.",
)
@click.option("--slug-warn-mb", type=int, default=300, show_default=True)
@click.option("--slug-max-mb", type=int, default=500, show_default=True)
@click.option(
    "--source-max-mb", type=int, default=archive.DEFAULT_MAX_BYTES // archive.MB, show_default=True
)
@click.option(
    "--memory-mb",
    type=int,
    default=DEFAULT_MEMORY_MB,
    show_default=True,
    help="Memory limit of the build sandbox.",
)
@click.option(
    "--pids",
    type=int,
    default=DEFAULT_PIDS,
    show_default=True,
    help="Process limit of the build sandbox.",
)
@click.option(
    "--ack-wait",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds without progress before a job goes to another builder.",
)
@click.option(
    "--max-deliver", type=int, default=3, show_default=True, help="Attempts per build job."
)
@click.option(
    "--drain-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="On SIGTERM, how long builds in hand may run before being handed back.",
)
@click.option(
    "--build-network",
    type=click.Choice(["isolated", "host"]),
    default="isolated",
    show_default=True,
    help="isolated: every build step in a network namespace of its own (egress only); "
    "host: steps share the host's network.",
)
@stack_option("build")
@tls.credentials_options
@click.option("--log-level", default=None)
def main(
    nats_servers: str,
    nats_replicas: int,
    data_dir: Path,
    name: str,
    slots: int,
    build_timeout: float,
    slug_warn_mb: int,
    slug_max_mb: int,
    source_max_mb: int,
    memory_mb: int,
    pids: int,
    ack_wait: float,
    max_deliver: int,
    drain_timeout: float,
    build_network: str,
    stack: str,
    credentials: Bundle | None,
    insecure: bool,
    log_level: str | None,
) -> None:
    """Take build jobs from NATS JetStream and turn sources into slugs."""
    log.configure("builder", log_level)
    limits = Limits(
        build_timeout=build_timeout,
        slug_warn_bytes=slug_warn_mb * archive.MB,
        slug_max_bytes=slug_max_mb * archive.MB,
        source_max_bytes=source_max_mb * archive.MB,
    )
    settings = QueueSettings(ack_wait=ack_wait, max_deliver=max_deliver, replicas=nats_replicas)
    asyncio.run(
        serve(
            servers=[s.strip() for s in nats_servers.split(",") if s.strip()],
            data_dir=data_dir.resolve(),
            name=name,
            slots=slots,
            limits=limits,
            settings=settings,
            memory_mb=memory_mb,
            pids=pids,
            drain_timeout=drain_timeout,
            build_network=build_network,
            credentials=credentials,
            stack=stack,
        )
    )


if __name__ == "__main__":
    main()
