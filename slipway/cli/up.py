"""slipway up: start the whole platform on this host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from slipway import errors
from slipway import up as platform
from slipway.cli import settings
from slipway.cli.base import cli


@cli.command("up")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path.home() / ".slipway",
    show_default=True,
    envvar="SLIPWAY_DATA_DIR",
    help="Where etcd, NATS, dynos, builds and logs keep their data.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the API, etcd, NATS and dynos bind and advertise.",
)
@click.option("--api-port", default=7070, show_default=True, help="Controller gRPC API port.")
@click.option(
    "--router",
    "router_listen",
    default="0.0.0.0:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the HTTP router listens.",
)
@click.option(
    "--router-https",
    "router_tls_listen",
    default="0.0.0.0:8443",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the router serves HTTPS (certificates from the cluster CA).",
)
@click.option(
    "--platform-api-port",
    default=5443,
    show_default=True,
    help="The Heroku Platform API (v3) on the controller (HTTPS).",
)
@click.option("--etcd-port", default=2379, show_default=True)
@click.option("--etcd-peer-port", default=2380, show_default=True)
@click.option("--nats-port", default=4222, show_default=True)
@click.option(
    "--base-domain",
    default="localhost",
    show_default=True,
    help="Apps answer at APP.BASE_DOMAIN on the router.",
)
@click.option(
    "--addons-port", default=5480, show_default=True, help="The add-ons' partner API (HTTPS)."
)
@click.option(
    "--addons-callback-port",
    default=5481,
    show_default=True,
    help="The controller's HTTPS API add-on providers call back to after answering 202.",
)
@click.option(
    "--postgres-port",
    default=5433,
    show_default=True,
    help="The built-in PostgreSQL's port (dynos of attached apps only).",
)
@click.option(
    "--redis-ports",
    default="6380-6479",
    show_default=True,
    help="The ports the built-in Redis add-ons get, one each (LOW-HIGH).",
)
@click.option(
    "--addons-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="PostgreSQL's and Redis's data; must be searchable by the postgres and redis users "
    "[default: DATA_DIR/addons, or /var/lib/slipway/addons-* when DATA_DIR is private]",
)
@click.option(
    "--addons-address",
    default="",
    metavar="IPV4",
    help="The address dynos dial for their databases [default: this host's address on "
    "its default route].",
)
@click.option("--no-install", is_flag=True, help="Do not apt-get install missing engines.")
def up(
    data_dir: Path,
    host: str,
    api_port: int,
    router_listen: str,
    router_tls_listen: str,
    platform_api_port: int,
    etcd_port: int,
    etcd_peer_port: int,
    nats_port: int,
    base_domain: str,
    addons_port: int,
    addons_callback_port: int,
    postgres_port: int,
    redis_ports: str,
    addons_dir: Path | None,
    addons_address: str,
    no_install: bool,
) -> None:
    """Start etcd, NATS, a controller, an agent, a router and a builder, supervised together.

    Prints where the router and the API listen and logs this CLI in. Ctrl-C stops
    everything in order; running it again keeps apps, releases and config.
    """
    cfg = platform.UpConfig(
        data_dir=data_dir.resolve(),
        host=host,
        api_port=api_port,
        router_listen=router_listen,
        router_tls_listen=router_tls_listen,
        platform_api_port=platform_api_port,
        etcd_port=etcd_port,
        etcd_peer_port=etcd_peer_port,
        nats_port=nats_port,
        base_domain=base_domain,
        addons_port=addons_port,
        callback_port=addons_callback_port,
        postgres_port=postgres_port,
        redis_ports=redis_ports,
        addons_dir_option=addons_dir.resolve() if addons_dir else None,
        addons_address=addons_address or _default_addons_address(),
    )

    def say(line: str) -> None:
        # Progress must never break a shutdown: stderr may be a pipe that is gone.
        try:
            click.echo(line, err=True)
        except OSError:
            pass

    missing = platform.missing_packages()
    if missing:
        if no_install:
            raise click.ClickException(f"missing {', '.join(missing)} (and --no-install given)")
        platform.install(missing, say)
    try:
        platform.ensure_stack_images(say)
    except errors.SlipwayError as exc:
        raise click.ClickException(exc.message) from None

    def on_ready(token: str) -> None:
        settings.write_file(cfg.api, token, ca_file=cfg.ca_file)
        port = cfg.router_port
        suffix = "" if port == 80 else f":{port}"
        click.echo("")
        click.echo("Slipway is up.")
        click.echo(
            f"  Router:  http://APP.{cfg.base_domain}{suffix}/   (listening on {cfg.router_listen})"
        )
        tls_port = cfg.router_tls_port
        click.echo(
            f"  HTTPS:   https://APP.{cfg.base_domain}{'' if tls_port == 443 else f':{tls_port}'}/"
            f"   (trust {cfg.ca_file}, e.g. curl --cacert)"
        )
        click.echo(f"  API:     {cfg.api}")
        click.echo(f"  Platform API: https://localhost:{cfg.platform_api_port}   (Heroku's v3)")
        click.echo(f"  Token:   {token}")
        click.echo(f"  CLI:     logged in (saved in {settings.config_path()})")
        click.echo(f"  Data:    {cfg.data_dir}   (component logs in {cfg.data_dir / 'logs'})")
        click.echo(
            f"  Add-ons: postgresql at {cfg.addons_address}:{cfg.postgres_port}, "
            f"redis at {cfg.addons_address}:{cfg.redis_ports} (data in {cfg.addons_dir})"
        )
        click.echo("")
        click.echo(
            "Deploy something:  slipway apps:create demo && slipway deploy -a demo examples/python"
        )
        click.echo("Stop with Ctrl-C.")

    asyncio.run(platform.serve(cfg, say, on_ready))


def _default_addons_address() -> str:
    from slipway.providers.__main__ import default_address

    try:
        return default_address()
    except errors.SlipwayError as exc:
        raise click.ClickException(
            f"{exc.message} (slipway up --addons-address IPV4: an address of this host "
            "that is not loopback)"
        ) from None
