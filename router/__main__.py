"""``slipway-router``: load config, set up logging, run one or more workers.

With ``--workers N`` (N > 1) the parent forks N workers that each bind the
same listen addresses with SO_REUSEPORT (the kernel spreads connections
between them) and supervises them: SIGTERM/SIGINT are passed on, and the
parent exits when they have.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable

import click

from router.config import Limits, Listen, LogConfig, RouterConfig
from slipway import conffile, log, sdnotify, tls
from slipway.aio import wait_set
from slipway.pki import Bundle

logger = log.get(__name__)
_READY_TABLE_WAIT = 10.0  # seconds systemd readiness waits for the first route table


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return tuple(out)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@conffile.config_option("SLIPWAY_ROUTER_CONFIG")
@click.option(
    "--listen",
    "-l",
    multiple=True,
    default=("0.0.0.0:8080",),
    envvar="SLIPWAY_ROUTER_LISTEN",
    help="HOST:PORT to accept HTTP on; repeat (or comma-separate) for several.",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1, 256),
    default=1,
    envvar="SLIPWAY_ROUTER_WORKERS",
    help="Worker processes sharing the listen ports via SO_REUSEPORT.",
)
@click.option(
    "--etcd",
    "etcd",
    default="127.0.0.1:2379",
    envvar="SLIPWAY_ETCD",
    help="etcd endpoints, comma-separated.",
)
@click.option(
    "--etcd-prefix",
    default="/slipway",
    envvar="SLIPWAY_ETCD_PREFIX",
    help="Key prefix Slipway uses in etcd.",
)
@click.option(
    "--base-domain",
    default="localhost",
    envvar="SLIPWAY_BASE_DOMAIN",
    help="Apps answer at APP.BASE_DOMAIN.",
)
@click.option(
    "--nats",
    "nats_servers",
    default="",
    envvar="SLIPWAY_NATS",
    help="NATS servers for router logs, comma-separated; empty: logs dropped.",
)
@click.option(
    "--metrics-listen",
    default="",
    envvar="SLIPWAY_ROUTER_METRICS",
    help="HOST:PORT for Prometheus metrics (worker N uses PORT+N); empty: off.",
)
@click.option(
    "--forwarded-proto",
    default="http",
    envvar="SLIPWAY_ROUTER_FORWARDED_PROTO",
    help="X-Forwarded-Proto to send (set https when TLS ends in front).",
)
@click.option(
    "--connect-timeout",
    type=float,
    default=Limits.connect_timeout,
    help="Seconds to connect to a dyno before quarantining it.",
)
@click.option(
    "--request-timeout",
    type=float,
    default=Limits.first_byte_timeout,
    help="Seconds to the first response byte (H12).",
)
@click.option(
    "--idle-timeout",
    type=float,
    default=Limits.idle_timeout,
    help="Rolling idle window once a response started (H15/H28).",
)
@tls.credentials_options
@click.option(
    "--log-level", default="info", envvar="SLIPWAY_LOG_LEVEL", help="debug, info, warning or error."
)
def main(
    listen: tuple[str, ...],
    workers: int,
    etcd: str,
    etcd_prefix: str,
    base_domain: str,
    nats_servers: str,
    metrics_listen: str,
    forwarded_proto: str,
    connect_timeout: float,
    request_timeout: float,
    idle_timeout: float,
    credentials: Bundle | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Slipway's HTTP router: routes APP.BASE_DOMAIN (and custom domains) to the
    app's web dynos, with routes learned from etcd and request logs sent to NATS."""
    try:
        listens = tuple(Listen.parse(v) for v in _split(listen))
        metrics = Listen.parse(metrics_listen) if metrics_listen else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    config = RouterConfig(
        listen=listens,
        workers=workers,
        etcd_endpoints=_split((etcd,)),
        etcd_prefix=etcd_prefix,
        base_domain=base_domain.strip(".").lower(),
        forwarded_proto=forwarded_proto,
        metrics_listen=metrics,
        limits=Limits(
            connect_timeout=connect_timeout,
            first_byte_timeout=request_timeout,
            idle_timeout=idle_timeout,
        ),
        logs=LogConfig(servers=_split((nats_servers,))),
        credentials=credentials,
    )
    log.configure("router", log_level)
    if workers == 1:
        run_worker(config, 0, on_listening=lambda: sdnotify.ready("listening"))
        return
    supervise(config)


def run_worker(
    config: RouterConfig, index: int, on_listening: Callable[[], object] | None = None
) -> None:
    import uvloop

    from router.server import Router

    async def serve() -> None:
        router = Router(config, worker=index)
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                os._exit(1)  # a second signal forces the exit
            sdnotify.stopping()  # a no-op in forked workers: they have no NOTIFY_SOCKET
            router.stop()

        async def notify_listening() -> None:
            await router.listening.wait()
            # Ready means routing: wait for the first route table, but not for
            # long, since with etcd away a router still serves what it learns later.
            try:
                await wait_set(router.watcher.ready, _READY_TABLE_WAIT)
            except TimeoutError:
                logger.warning("route table not loaded yet; reporting ready", worker=index)
            if on_listening is not None:
                on_listening()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        notifier = asyncio.create_task(notify_listening())
        try:
            await router.run()
        finally:
            notifier.cancel()

    uvloop.run(serve())


def supervise(config: RouterConfig) -> None:
    ctx = multiprocessing.get_context("fork")
    # Workers report "listening" here; systemd only hears the parent (NotifyAccess=main),
    # so the parent says READY=1 once every worker listens.
    listening = ctx.SimpleQueue()
    notify_socket = os.environ.pop("NOTIFY_SOCKET", None)  # workers must not notify
    procs = [
        ctx.Process(
            target=run_worker,
            args=(config, i, lambda i=i: listening.put(i)),
            name=f"router-{i}",
        )
        for i in range(config.workers)
    ]
    for proc in procs:
        proc.start()
    if notify_socket is not None:
        os.environ["NOTIFY_SOCKET"] = notify_socket

    def await_workers() -> None:
        for _ in procs:
            listening.get()
        sdnotify.ready(f"{len(procs)} workers listening")

    threading.Thread(target=await_workers, name="router-ready", daemon=True).start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    def on_stop(signum: int, frame: object) -> None:
        sdnotify.stopping()
        forward(signum, frame)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    code = 0
    for proc in procs:
        proc.join()
        code = code or (proc.exitcode or 0)
    sys.exit(code)


if __name__ == "__main__":
    main()
