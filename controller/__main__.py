"""``slipway-controller``: serve the API, and manage API tokens."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from controller.api.auth import Tokens
from controller.config import FILE_KEYS, ControllerConfig, split_list
from controller.server import serve
from slipway import conffile, errors
from slipway import log as slog
from slipway.etcd import Etcd
from slipway.keys import Keys

T = TypeVar("T")

# Every command reads the same file; settings without a flag of their own
# (sizes, GC, timeouts: see deploy/config/controller.toml) are file-only.
config_option = conffile.config_option("SLIPWAY_CONTROLLER_CONFIG", file_only=FILE_KEYS)
etcd_option = click.option(
    "--etcd",
    envvar="SLIPWAY_ETCD",
    metavar="HOST:PORT[,...]",
    help="etcd endpoints, comma-separated.  [default: 127.0.0.1:2379]",
)
prefix_option = click.option(
    "--etcd-prefix",
    envvar="SLIPWAY_ETCD_PREFIX",
    metavar="PREFIX",
    help="Key prefix for all Slipway state.  [default: /slipway]",
)


def _load(**flags: Any) -> ControllerConfig:
    try:
        return ControllerConfig.build(conffile.file_only_settings(), conffile.source(), **flags)
    except errors.SlipwayError as exc:
        raise click.ClickException(str(exc)) from exc


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except errors.SlipwayError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The Slipway controller: stores desired state in etcd and serves the gRPC API.

    Start it with `slipway-controller serve`, then create the first API token
    with `slipway-controller tokens create --name admin`.
    """


@cli.command("serve")
@config_option
@click.option(
    "--listen",
    envvar="SLIPWAY_CONTROLLER_LISTEN",
    metavar="HOST:PORT",
    help="Address the gRPC API binds.  [default: 127.0.0.1:7070]",
)
@etcd_option
@prefix_option
@click.option(
    "--nats",
    envvar="SLIPWAY_NATS",
    metavar="URL[,...]",
    help="NATS servers, comma-separated.  [default: nats://127.0.0.1:4222]",
)
@click.option(
    "--nats-replicas",
    envvar="SLIPWAY_NATS_REPLICAS",
    type=click.IntRange(1, 5),
    help="Copies JetStream keeps of each stream and bucket the controller creates "
    "(3 on a 3-server NATS cluster).  [default: 1]",
)
@click.option(
    "--base-domain",
    envvar="SLIPWAY_BASE_DOMAIN",
    help="Apps answer at APP.BASE_DOMAIN on the routers.  [default: localhost]",
)
@click.option("--log-level", envvar="SLIPWAY_LOG_LEVEL", default="info", show_default=True)
def serve_cmd(
    listen: str | None,
    etcd: str | None,
    etcd_prefix: str | None,
    nats: str | None,
    nats_replicas: int | None,
    base_domain: str | None,
    log_level: str,
) -> None:
    """Serve the PlatformService API until SIGTERM."""
    slog.configure("controller", log_level)
    config = _load(
        listen=listen,
        etcd=split_list(etcd),
        etcd_prefix=etcd_prefix,
        nats=split_list(nats),
        nats_replicas=nats_replicas,
        base_domain=base_domain,
    )
    _run(lambda: serve(config))


@cli.group()
def tokens() -> None:
    """Create, list and revoke API tokens (stored hashed in etcd)."""


def _with_tokens(
    etcd: str | None,
    etcd_prefix: str | None,
    action: Callable[[Tokens], Awaitable[T]],
) -> T:
    config = _load(etcd=split_list(etcd), etcd_prefix=etcd_prefix)

    async def go() -> T:
        async with Etcd(config.etcd) as client:
            return await action(Tokens(client, Keys(config.etcd_prefix)))

    return _run(go)


@tokens.command("create")
@click.option("--name", required=True, help="Who or what the token is for (shown in logs).")
@config_option
@etcd_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_create(name: str, etcd: str | None, etcd_prefix: str | None, as_json: bool) -> None:
    """Create a token and print it once (only its digest is stored)."""
    token = _with_tokens(etcd, etcd_prefix, lambda t: t.create(name))
    if as_json:
        click.echo(json.dumps({"name": name, "token": token}))
    else:
        click.echo(token)
        if sys.stdout.isatty():
            click.echo(
                f"Created token {name!r}. Use it with: slipway login --token <token>", err=True
            )


@tokens.command("list")
@config_option
@etcd_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_list(etcd: str | None, etcd_prefix: str | None, as_json: bool) -> None:
    """List token names (never the tokens)."""
    rows = _with_tokens(etcd, etcd_prefix, lambda t: t.list())
    if as_json:
        click.echo(json.dumps([{"name": r.name, "created_at": r.created_at} for _, r in rows]))
        return
    for _, record in sorted(rows, key=lambda r: r[1].name):
        click.echo(record.name)


@tokens.command("revoke")
@click.argument("name")
@config_option
@etcd_option
@prefix_option
def tokens_revoke(name: str, etcd: str | None, etcd_prefix: str | None) -> None:
    """Revoke every token with NAME."""
    count = _with_tokens(etcd, etcd_prefix, lambda t: t.revoke(name))
    if not count:
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"Revoked {count} token(s) named {name!r}")


def main() -> None:
    cli(prog_name="slipway-controller")


if __name__ == "__main__":
    main()
