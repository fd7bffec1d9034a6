"""``slipway-router``: load config, set up logging, run the router.

``--workers N`` sets the data plane's threads: they all take connections from
the same listeners and share one route table, quarantine list and pool, so a
router is one process whatever its size.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from router.config import Limits, Listen, LogConfig, RouterConfig
from slipway import conffile, errors, log, sdnotify, tls
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
    "--listen-tls",
    multiple=True,
    default=(),
    envvar="SLIPWAY_ROUTER_LISTEN_TLS",
    help="HOST:PORT to accept HTTPS on (TLS 1.2 and 1.3); repeat or comma-separate.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SLIPWAY_ROUTER_TLS_CERT",
    help="Default certificate chain (PEM) for HTTPS: names without their own certificate.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SLIPWAY_ROUTER_TLS_KEY",
    help="The default certificate's private key (PEM).",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1, 256),
    default=1,
    envvar="SLIPWAY_ROUTER_WORKERS",
    help="Data plane threads, all serving every listen address (about one per core).",
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
    help="HOST:PORT for Prometheus metrics; empty: off.",
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
    listen_tls: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
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
        tls_listens = tuple(Listen.parse(v) for v in _split(listen_tls))
        metrics = Listen.parse(metrics_listen) if metrics_listen else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if tls_listens and (tls_cert is None or tls_key is None):
        raise click.UsageError(
            "--listen-tls needs the default certificate: --tls-cert and --tls-key"
        )
    config = RouterConfig(
        listen=listens,
        listen_tls=tls_listens,
        tls_cert=tls_cert,
        tls_key=tls_key,
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
    run(config, on_listening=lambda: sdnotify.ready("listening"))


def run(config: RouterConfig, on_listening: Callable[[], object] | None = None) -> None:
    import uvloop

    from router.server import Router

    async def serve() -> None:
        router = Router(config)
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                os._exit(1)  # a second signal forces the exit
            sdnotify.stopping()
            router.stop()

        async def notify_listening() -> None:
            await router.listening.wait()
            # Ready means routing: wait for the first route table, but not for
            # long, since with etcd away a router still serves what it learns later.
            try:
                await wait_set(router.watcher.ready, _READY_TABLE_WAIT)
            except TimeoutError:
                logger.warning("route table not loaded yet; reporting ready")
            if on_listening is not None:
                on_listening()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        notifier = asyncio.create_task(notify_listening())
        try:
            await router.run()
        finally:
            notifier.cancel()

    try:
        uvloop.run(serve())
    except errors.InvalidArgument as exc:
        click.echo(f"slipway-router: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
