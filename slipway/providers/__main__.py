"""slipway-addons: the built-in add-on providers of one add-ons host.

Starts the PostgreSQL cluster and every Redis add-on's server, serves the
partner API over HTTPS, writes the manifests the operator registers
(``slipway-controller addons:register DATA_DIR/manifests/postgresql.json``,
``.../redis.json``), and keeps the engines running: one that dies is
restarted; SIGTERM stops them (PostgreSQL with a fast shutdown, redis after
flushing its append-only file).
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import click

from slipway import errors, log, sdnotify, tls
from slipway.pki import Bundle
from slipway.providers import manifest
from slipway.providers.partner import Backend, PartnerServer
from slipway.providers.postgres import (
    BackupScheduleLoop,
    PostgresBackend,
    PostgresCluster,
    QuotaLoop,
)
from slipway.providers.redis import RedisBackend, RedisFleet
from slipway.providers.resources import ResourceStore
from slipway.providers.vault import BackupVault

_log = log.get("addons")


def default_address() -> str:
    """The host's address on its default route: what dynos on any host can dial.

    A UDP socket "connected" to an outside address sends nothing; it only makes
    the kernel choose the source address it would use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: never reached
            address = str(probe.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        raise errors.FailedPrecondition(
            "this host has no non-loopback IPv4 address for dynos to reach the add-ons at; "
            "pass --advertise-address"
        )
    return address


async def serve(
    *,
    data_dir: Path,
    listen: str,
    advertise: str,
    postgres_port: int,
    redis_ports: tuple[int, int],
    credentials: Bundle,
    quota_interval: float,
    nats: list[str],
) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster = PostgresCluster(
        data_dir / "postgresql", listen=[advertise], port=postgres_port, bundle=credentials
    )
    store = ResourceStore(data_dir / "resources")
    store.prepare()
    fleet = RedisFleet(data_dir / "redis", store, address=advertise, bundle=credentials)
    vault = BackupVault(nats, credentials) if nats else None
    if vault is None:
        _log.warning("no --nats: database backups are kept on this host only")
    postgres = PostgresBackend(cluster, advertise, vault=vault)
    redis = RedisBackend(fleet, advertise, redis_ports)
    backends: dict[str, Backend] = {postgres.service: postgres, redis.service: redis}
    ports = {
        postgres.service: str(postgres_port),
        redis.service: f"{redis_ports[0]}-{redis_ports[1]}",
    }
    passwords = {name: manifest.service_password(data_dir / "secrets", name) for name in backends}
    server = PartnerServer(
        backends,
        passwords,
        store,
        listen,
        tls.server_context(credentials, require_client_cert=False),
    )
    await cluster.start()
    await fleet.start_all()
    await server.start()
    host = listen.rpartition(":")[0].strip("[]")
    base_host = advertise if host in ("", "0.0.0.0") else host
    for name, backend in backends.items():
        doc = manifest.manifest(
            backend,
            password=passwords[name],
            base_url=f"https://{base_host}:{server.port}",
            ca_pem=credentials.ca_file.read_text(),
            address=advertise,
            ports=ports[name],
        )
        path = data_dir / "manifests" / f"{name}.json"
        manifest.write(path, doc)
        _log.info("manifest written", service=name, path=str(path))
    sdnotify.ready(f"add-ons serving {', '.join(backends)}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(server.run()),
                tg.create_task(cluster.supervise()),
                tg.create_task(fleet.supervise(server.lock)),
                tg.create_task(
                    QuotaLoop(postgres, store, server.lock, interval=quota_interval).run()
                ),
                tg.create_task(BackupScheduleLoop(postgres, store, server.lock).run()),
            ]
            await stop.wait()
            sdnotify.stopping()
            for task in tasks:
                task.cancel()
    finally:
        await asyncio.gather(cluster.stop(), fleet.stop_all())
        if vault is not None:
            await vault.close()
        _log.info("add-ons stopped")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The built-in add-on providers (PostgreSQL, Redis) of an add-ons host."""


@cli.command("serve")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/slipway/addons"),
    show_default=True,
    help="The cluster's data, what was provisioned (0600 files), the manifests. Its "
    "parents must be searchable by the postgres user.",
)
@click.option(
    "--listen",
    default="127.0.0.1:5480",
    show_default=True,
    help="host:port of the partner API (HTTPS) the controller calls.",
)
@click.option(
    "--advertise-address",
    default="",
    help="The IPv4 address dynos dial for their databases (default: this host's address "
    "on its default route). PostgreSQL and redis listen there only.",
)
@click.option("--postgres-port", type=click.IntRange(1, 65535), default=5433, show_default=True)
@click.option(
    "--redis-ports",
    default="6380-6479",
    show_default=True,
    help="The ports Redis add-ons get, one each (LOW-HIGH): how many this host can hold.",
)
@click.option(
    "--quota-interval",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds between checks of each database's size against its plan.",
)
@click.option(
    "--nats",
    envvar="SLIPWAY_NATS",
    default="",
    help="NATS servers (comma-separated) whose object store keeps the database backups; "
    "without it backups stay on this host only.",
)
@tls.credentials_options
@click.option("--log-level", default=None)
def serve_command(
    data_dir: Path,
    listen: str,
    advertise_address: str,
    postgres_port: int,
    redis_ports: str,
    quota_interval: float,
    nats: str,
    credentials: Bundle | None,
    insecure: bool,
    log_level: str | None,
) -> None:
    """Run the providers until SIGTERM."""
    log.configure("addons", log_level)
    if credentials is None:
        raise click.UsageError(
            "--credentials DIR is required (a bundle of role 'addons': `slipway-controller "
            "certs issue --role addons --host ADDRESS`); add-ons serve TLS only"
        )
    try:
        asyncio.run(
            serve(
                data_dir=data_dir.resolve(),
                listen=listen,
                advertise=advertise_address or default_address(),
                postgres_port=postgres_port,
                redis_ports=manifest.port_range(redis_ports),
                credentials=credentials,
                quota_interval=quota_interval,
                nats=[n.strip() for n in nats.split(",") if n.strip()],
            )
        )
    except errors.SlipwayError as exc:
        raise click.ClickException(exc.message) from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
