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

from controller.api.auth import Tokens, node_token_name
from controller.api.join import JoinTokens
from controller.config import FILE_KEYS, ControllerConfig, split_list
from controller.core.models import UserRecord
from controller.core.sizes import SizeTable
from controller.pki_cli import ca, certs, check_name, parse_duration
from controller.server import serve
from controller.store import backup as backups
from controller.store.accounts import Accounts
from controller.store.addons import Addons
from controller.store.state import State
from slipway import conffile, errors, etcdauth, objstore, pki, tls
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
@click.option(
    "--web-url",
    envvar="SLIPWAY_WEB_URL",
    metavar="URL",
    help="The URL users are shown for an app, {app} standing for its name, with the scheme "
    "and port the routers serve (e.g. https://{app}.apps.example.com/).  "
    "[default: http://{app}.BASE_DOMAIN/]",
)
@click.option(
    "--app-certificates-from-ca",
    is_flag=True,
    default=None,
    envvar="SLIPWAY_APP_CERTIFICATES_FROM_CA",
    help="Make an HTTPS certificate for every APP.BASE_DOMAIN from the cluster CA "
    "(needs --ca-dir; for a base domain like localhost that no wildcard can cover).",
)
@click.option(
    "--platform-api-listen",
    envvar="SLIPWAY_PLATFORM_API_LISTEN",
    help="Serve the Heroku Platform API (v3) over HTTPS on HOST:PORT [default: off].",
)
@click.option(
    "--acme-directory",
    envvar="SLIPWAY_ACME_DIRECTORY",
    help="The ACME server's directory URL for automated certificates (certs:auto:enable); "
    "[default: off]",
)
@click.option(
    "--acme-ca-file",
    envvar="SLIPWAY_ACME_CA_FILE",
    help="CA file to check the ACME server's HTTPS against [default: the system's].",
)
@click.option(
    "--acme-email",
    envvar="SLIPWAY_ACME_EMAIL",
    help="Contact e-mail of the cluster's ACME account.",
)
@click.option(
    "--ca-dir",
    envvar="SLIPWAY_CA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The cluster CA's directory (ca.crt and ca.key, from `slipway-controller ca init`): "
    "with it this controller admits nodes that `slipway-agent join` with a join token.",
)
@click.option(
    "--addons-listen",
    envvar="SLIPWAY_ADDONS_LISTEN",
    metavar="HOST:PORT",
    help="Address of the HTTPS API add-on providers call back to after answering a "
    "provision with 202 (port 0: any free port; empty: off).  [default: 127.0.0.1:0]",
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
    web_url: str | None,
    app_certificates_from_ca: bool | None,
    platform_api_listen: str | None,
    acme_directory: str | None,
    acme_ca_file: str | None,
    acme_email: str | None,
    ca_dir: Path | None,
    addons_listen: str | None,
    credentials: Bundle | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Serve the PlatformService API until SIGTERM.

    With --credentials (a controller bundle whose certificate names the listen
    host) the API is served over TLS; without, in plaintext.
    """
    slog.configure("controller", log_level)
    if ca_dir is not None:
        _run(lambda: _check_ca(ca_dir))
    config = _load(
        credentials,
        insecure,
        listen=listen,
        etcd=split_list(etcd),
        etcd_prefix=etcd_prefix,
        nats=split_list(nats),
        nats_replicas=nats_replicas,
        base_domain=base_domain,
        web_url=web_url,
        app_certificates_from_ca=app_certificates_from_ca,
        platform_api_listen=platform_api_listen,
        acme_directory=acme_directory,
        acme_ca_file=acme_ca_file,
        acme_email=acme_email,
        ca_dir=str(ca_dir) if ca_dir else None,
        addons_listen=addons_listen,
    )
    _run(lambda: serve(config))


async def _check_ca(ca_dir: Path) -> None:
    pki.load_ca(ca_dir)  # fail now, not at the first join


@cli.group()
def tokens() -> None:
    """Create, list and revoke API tokens (stored hashed in etcd)."""


def _with_etcd(
    engine: dict[str, Any], action: Callable[[Etcd, ControllerConfig], Awaitable[T]]
) -> T:
    """Run ``action`` on etcd opened with an operator command's engine options."""
    config = _load(
        engine["credentials"],
        engine["insecure"],
        etcd=split_list(engine["etcd"]),
        etcd_prefix=engine["etcd_prefix"],
    )

    async def go() -> T:
        async with Etcd(config.etcd, credentials=config.credentials) as client:
            return await action(client, config)

    return _run(go)


def _with_tokens(engine: dict[str, Any], action: Callable[[Tokens], Awaitable[T]]) -> T:
    return _with_etcd(
        engine, lambda client, config: action(Tokens(client, Keys(config.etcd_prefix)))
    )


@tokens.command("create")
@click.option("--name", help="Who or what the token is for (shown in logs).")
@click.option(
    "--node",
    metavar="NAME",
    help="Make a node token instead: it opens NodeService as node NAME only, "
    "and replaces that node's earlier token (agents get theirs from `slipway-agent join`).",
)
@etcd_access
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_create(name: str | None, node: str | None, as_json: bool, **engine: Any) -> None:
    """Create a token and print it once (only its digest is stored)."""
    if node:
        check_name(node)
        token = _with_tokens(engine, lambda t: t.create_node_token(node))
        name = node_token_name(node)
    elif name:

        async def create(t: Tokens) -> str:
            token, _ = await t.create(name)
            return token

        token = _with_tokens(engine, create)
    else:
        raise click.UsageError("give --name NAME (an API token) or --node NAME (a node token)")
    if as_json:
        click.echo(json.dumps({"name": name, "token": token, "node": node or ""}))
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
        click.echo(
            json.dumps(
                [{"name": r.name, "created_at": r.created_at, "node": r.node} for _, r in rows]
            )
        )
        return
    for _, record in sorted(rows, key=lambda r: r[1].name):
        click.echo(f"{record.name}  (node {record.node})" if record.node else record.name)


@tokens.command("revoke")
@click.argument("name")
@etcd_access
def tokens_revoke(name: str, **engine: Any) -> None:
    """Revoke every token with NAME."""
    count = _with_tokens(engine, lambda t: t.revoke(name))
    if not count:
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"Revoked {count} token(s) named {name!r}")


@cli.group()
def users() -> None:
    """People's accounts (the first admin, before anyone can log in)."""


@users.command("create")
@click.argument("email")
@click.option("--admin", is_flag=True, help="A platform admin: every app, users and nodes.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from stdin (first line). Without it the account has none "
    "and its owner logs in with a token an admin creates.",
)
@etcd_access
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_create(
    email: str, admin: bool, password_stdin: bool, as_json: bool, **engine: Any
) -> None:
    """Create the account EMAIL (then: `slipway login --email EMAIL`)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None

    async def create(t: Tokens) -> UserRecord:
        return await Accounts(t.etcd, t.keys).create_user(email, password, admin=admin)

    try:
        record = _with_tokens(engine, create)
    except errors.SlipwayError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(json.dumps({"email": record.email, "admin": record.admin}))
    else:
        kind = "admin" if record.admin else "user"
        click.echo(f"Created {kind} {record.email}")


@cli.group()
def nodes() -> None:
    """Admit nodes (one-time join tokens for `slipway-agent join`) and remove them."""


@nodes.command("join-token")
@click.argument("name", callback=lambda ctx, param, value: check_name(value))
@click.option(
    "--ttl",
    default="1h",
    show_default=True,
    help="How long the token may be used: 90s, 30m, 1h, 7d (it works once).",
)
@etcd_access
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def nodes_join_token(name: str, ttl: str, as_json: bool, **engine: Any) -> None:
    """Create a one-time token that admits node NAME, and print it once.

    On the new host: `slipway-agent join --controller ADDR --ca-file ca.crt
    --token TOKEN --credentials DIR`. The controller it calls needs --ca-dir.
    """
    seconds = parse_duration(ttl)
    token, record = _with_tokens(engine, lambda t: JoinTokens(t.etcd, t.keys).create(name, seconds))
    if as_json:
        click.echo(json.dumps({"node": name, "token": token, "expires_at": record.expires_at}))
        return
    click.echo(token)
    if sys.stdout.isatty():
        click.echo(
            f"Join token for node {name!r}, valid once for {ttl}. On the node run:\n"
            f"  slipway-agent join --controller HOST:PORT --ca-file ca.crt --token <token> "
            "--credentials /etc/slipway/node",
            err=True,
        )


@nodes.command("remove")
@click.argument("name", callback=lambda ctx, param, value: check_name(value))
@etcd_access
def nodes_remove(name: str, **engine: Any) -> None:
    """Shut node NAME out: revoke its node token and delete its etcd user and role.

    Its certificate then opens nothing in etcd and its agent can no longer
    call the controller. Drain the node first (`slipway nodes:drain NAME`)
    so its dynos move; a new join token admits the host again.
    """

    async def remove(t: Tokens) -> int:
        count = await t.revoke(node_token_name(name))
        await etcdauth.remove_node(t.etcd, name, say=click.echo)
        return count

    count = _with_tokens(engine, remove)
    click.echo(f"Node {name!r} removed ({count} token(s) revoked)")


cli.add_command(ca)
cli.add_command(certs)


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
        nc = await objstore.connect(
            config.nats, name="slipway-backup", credentials=config.credentials
        )
        try:
            stores = objstore.ObjectStores(nc.jetstream(), replicas=config.nats_replicas)
            async with Etcd(config.etcd, credentials=config.credentials) as client:
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


@cli.group("etcd")
def etcd_group() -> None:
    """etcd's users and roles: who may read and write what."""


@etcd_group.command("seal")
@etcd_access
def etcd_seal(**engine: Any) -> None:
    """Create etcd's users and roles and turn its authentication on.

    Give the credentials of a `root` bundle. Each certificate's CN is then its
    etcd user: root and controller may do everything, routers read routes/,
    each node writes its own presence and its dynos' records, builders get
    nothing. Run it once on a new cluster; running it again only repairs.
    """
    from slipway import etcdauth, pki

    credentials: Bundle | None = engine["credentials"]
    if credentials is None or credentials.identity().role is not pki.Role.ROOT:
        raise click.UsageError("etcd seal needs --credentials DIR of a root bundle")
    config = _load(
        credentials,
        False,
        etcd=split_list(engine["etcd"]),
        etcd_prefix=engine["etcd_prefix"],
    )

    async def go() -> None:
        async with Etcd(config.etcd, credentials=credentials) as client:
            await etcdauth.seal(client, config.etcd_prefix, say=click.echo)

    _run(go)
    click.echo(f"-----> etcd at {', '.join(config.etcd)} is sealed")


def _with_addons(engine: dict[str, Any], action: Callable[[Addons], Awaitable[T]]) -> T:
    def addons(client: Etcd, config: ControllerConfig) -> Awaitable[T]:
        state = State(client, Keys(config.etcd_prefix), SizeTable(config.sizes))
        return action(Addons(state))

    return _with_etcd(engine, addons)


@cli.command("addons:register")
@click.argument("manifest", type=click.File("r"), metavar="MANIFEST.json")
@etcd_access
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def addons_register(manifest: Any, as_json: bool, **engine: Any) -> None:
    """Register an add-on provider (or replace its registration) from its manifest.

    The manifest is Heroku's add-on manifest: {"id", "name", "api": {"password",
    "config_vars_prefix", "config_vars", "production": {"base_url"}}}, plus
    "plans": [{"name", "description", "default"}] and optionally
    "default_attachment" (e.g. DATABASE) and "api.ca_pem" (a CA the provider's
    certificate is signed by). Apps then `slipway addons:create ID[:PLAN]`.
    """
    from controller.core.addons import parse_manifest

    text = manifest.read()

    async def go(addons: Addons) -> tuple[bool, Any]:
        record = parse_manifest(text, now=addons.clock.now())
        return await addons.register(record), record

    created, record = _with_addons(engine, go)
    if as_json:
        shown = asdict(record)
        shown.pop("password")
        click.echo(json.dumps({"created": created, "service": shown}, indent=2))
        return
    verb = "Registered" if created else "Updated"
    plans = ", ".join(p.name for p in record.plans)
    click.echo(f"-----> {verb} add-on service {record.name} ({record.human_name})")
    click.echo(f"       plans: {plans}")
    click.echo(f"       provider: {record.base_url}")


@cli.command("addons:unregister")
@click.argument("service", metavar="SERVICE")
@etcd_access
def addons_unregister(service: str, **engine: Any) -> None:
    """Remove a provider's registration (refused while any of its add-ons exist)."""
    _with_addons(engine, lambda addons: addons.unregister(service))
    click.echo(f"-----> Unregistered add-on service {service}")


def main() -> None:
    cli(prog_name="slipway-controller")


if __name__ == "__main__":
    main()
