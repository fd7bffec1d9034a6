"""``slipway-controller``: serve the API, and manage API tokens."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from controller.api.auth import Tokens
from controller.config import FILE_KEYS, ControllerConfig, split_list
from controller.server import serve
from controller.store import backup as backups
from slipway import conffile, errors, objstore, tls
from slipway import log as slog
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.pki import Bundle

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


def etcd_access(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a command that opens etcd as an operator: the config file,
    the endpoints and prefix, and the credentials (a ``root`` bundle)."""
    for option in (tls.credentials_options, prefix_option, etcd_option, config_option):
        f = option(f)
    return f


def _load(credentials: Bundle | None, insecure: bool, **flags: Any) -> ControllerConfig:
    try:
        return ControllerConfig.build(
            conffile.file_only_settings(),
            conffile.source(),
            credentials=credentials,
            insecure=insecure,
            **flags,
        )
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
@tls.credentials_options
@click.option("--log-level", envvar="SLIPWAY_LOG_LEVEL", default="info", show_default=True)
def serve_cmd(
    listen: str | None,
    etcd: str | None,
    etcd_prefix: str | None,
    nats: str | None,
    nats_replicas: int | None,
    base_domain: str | None,
    credentials: Bundle | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Serve the PlatformService API until SIGTERM."""
    slog.configure("controller", log_level)
    config = _load(
        credentials,
        insecure,
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
    engine: dict[str, Any],
    action: Callable[[Tokens], Awaitable[T]],
) -> T:
    config = _load(
        engine["credentials"],
        engine["insecure"],
        etcd=split_list(engine["etcd"]),
        etcd_prefix=engine["etcd_prefix"],
    )

    async def go() -> T:
        async with Etcd(config.etcd) as client:
            return await action(Tokens(client, Keys(config.etcd_prefix)))

    return _run(go)


@tokens.command("create")
@click.option("--name", required=True, help="Who or what the token is for (shown in logs).")
@etcd_access
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_create(name: str, as_json: bool, **engine: Any) -> None:
    """Create a token and print it once (only its digest is stored)."""
    token = _with_tokens(engine, lambda t: t.create(name))
    if as_json:
        click.echo(json.dumps({"name": name, "token": token}))
    else:
        click.echo(token)
        if sys.stdout.isatty():
            click.echo(
                f"Created token {name!r}. Use it with: slipway login --token <token>", err=True
            )


@tokens.command("list")
@etcd_access
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_list(as_json: bool, **engine: Any) -> None:
    """List token names (never the tokens)."""
    rows = _with_tokens(engine, lambda t: t.list())
    if as_json:
        click.echo(json.dumps([{"name": r.name, "created_at": r.created_at} for _, r in rows]))
        return
    for _, record in sorted(rows, key=lambda r: r[1].name):
        click.echo(record.name)


@tokens.command("revoke")
@click.argument("name")
@etcd_access
def tokens_revoke(name: str, **engine: Any) -> None:
    """Revoke every token with NAME."""
    count = _with_tokens(engine, lambda t: t.revoke(name))
    if not count:
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"Revoked {count} token(s) named {name!r}")


nats_option = click.option(
    "--nats",
    envvar="SLIPWAY_NATS",
    metavar="URL[,...]",
    help="NATS servers, comma-separated.  [default: nats://127.0.0.1:4222]",
)


def _with_state(
    engine: dict[str, Any],
    action: Callable[[Etcd, Keys, objstore.ObjectStores], Awaitable[T]],
) -> T:
    config = _load(
        engine["credentials"],
        engine["insecure"],
        etcd=split_list(engine["etcd"]),
        etcd_prefix=engine["etcd_prefix"],
        nats=split_list(engine["nats"]),
    )

    async def go() -> T:
        nc = await objstore.connect(config.nats, name="slipway-backup")
        try:
            stores = objstore.ObjectStores(nc.jetstream(), replicas=config.nats_replicas)
            async with Etcd(config.etcd) as client:
                return await action(client, Keys(config.etcd_prefix), stores)
        finally:
            await nc.close()

    return _run(go)


def _print_report(report: backups.Report, as_json: bool, done: str) -> None:
    if as_json:
        click.echo(json.dumps(asdict(report), sort_keys=True))
        return
    click.echo(done)
    click.echo(f"       {report.keys} keys at revision {report.revision}")
    click.echo(f"       apps: {', '.join(report.apps) or 'none'}")
    for bucket, count in sorted(report.objects.items()):
        click.echo(f"       {bucket}: {count} objects listed")
    if report.slugs_saved:
        click.echo(f"       {report.slugs_saved} slugs saved in the backup")
    if report.slugs_uploaded:
        click.echo(f"       {report.slugs_uploaded} slugs put back into the object store")
    for line in report.missing:
        click.echo(f" !     {line}", err=True)


@cli.command("backup")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--with-slugs", is_flag=True, help="Also store every released slug (the file grows by them)."
)
@etcd_access
@nats_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backup_cmd(out: Path, with_slugs: bool, as_json: bool, **engine: Any) -> None:
    """Write a consistent backup of the platform state to OUT (a .tar.gz).

    It holds every app, release, config var, formation and token as read at one
    etcd revision, etcd's own snapshot, and a listing of the object store (with
    --with-slugs, the slugs too). It holds secrets: the file is made mode 0600.
    Bring it back with `slipway-controller restore OUT`.
    """
    report = _with_state(
        engine,
        lambda client, keys, stores: backups.backup(
            client, keys, stores, out, with_slugs=with_slugs
        ),
    )
    _print_report(report, as_json, f"-----> Backed up {len(report.apps)} apps to {out}")


@cli.command("restore")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@etcd_access
@nats_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def restore_cmd(backup: Path, as_json: bool, **engine: Any) -> None:
    """Bring a new (empty) etcd back to the state in BACKUP.

    Apps, releases, config vars, formations and tokens come back; the leader
    then places the formations' dynos on the agents that join. Slugs the
    backup carries and the object store lacks are put back; releases whose slug
    is nowhere are listed. Refuses to write into a prefix that holds state.
    """
    try:
        opened = backups.open_backup(backup)
    except errors.SlipwayError as exc:
        raise click.ClickException(str(exc)) from exc
    with opened.tar:
        report = _with_state(
            engine,
            lambda client, keys, stores: backups.restore(client, keys, stores, opened),
        )
    _print_report(report, as_json, f"-----> Restored {len(report.apps)} apps from {backup}")


def main() -> None:
    cli(prog_name="slipway-controller")


if __name__ == "__main__":
    main()
