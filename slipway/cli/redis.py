"""redis:info, redis:cli, redis:maxmemory, redis:credentials: the built-in Redis add-ons.

REDIS names one of the app's redis add-ons: an attachment name (``REDIS``,
``REDIS_URL``, ``REDIS_RED``) or the add-on's name. Without it: the one
attached as REDIS, else the only one there is.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import when
from slipway.cli.pg import (
    attached_names,
    choose,
    confirm_app,
    label,
    released,
    show_info,
    size,
)
from slipway.cli.run import AttachedRun, terminal_size
from slipway.client import Client
from slipway.providers.redis import POLICIES
from slipway.v1 import platform_pb2 as pb

SERVICE = "redis"


def _choose(client: Client, app: str, ref: str) -> pb.Addon:
    found = [a for a in client.list_addons(app).addons if a.service == SERVICE]
    return choose(found, app, ref, service=SERVICE, default_attachment="REDIS")


def info_lines(addon: pb.Addon, details: dict[str, Any]) -> list[tuple[str, str]]:
    """Pure: the rows of redis:info for one add-on."""
    used = int(details.get("memory_used_bytes") or 0)
    limit = int(details.get("memory_limit_bytes") or 0)
    memory = size(used) + (f" / {size(limit)} ({100 * used / limit:.1f}%)" if limit else "")
    connections = str(details.get("connections", "?"))
    if details.get("connection_limit"):
        connections += f"/{details['connection_limit']}"
    return [
        ("Plan", f"{addon.plan} ({details.get('plan_description', '')})".replace(" ()", "")),
        ("Status", "Available"),
        ("Version", str(details.get("version", "?"))),
        ("Memory", memory),
        ("Maxmemory", str(details.get("maxmemory_policy", "?"))),
        ("Connections", connections),
        ("Keys", str(details.get("keys", "?"))),
        ("Created", when(addon.created_at)),
        ("Add-on", addon.name),
    ]


@cli.command("redis:info")
@click.argument("redis", required=False, default="")
@app_option
@json_option
@with_client
def redis_info(client: Client, redis: str, app: str, as_json: bool) -> None:
    """Plan, memory, eviction policy, connections and keys of the app's Redis add-ons."""
    addons = [a for a in client.list_addons(app).addons if a.service == SERVICE]
    chosen = [_choose(client, app, redis)] if redis or not addons else addons
    show_info(client, app, chosen, info_lines, as_json)


def cli_line(var: str, command: str) -> str:
    """Pure: the shell line a one-off dyno runs for redis:cli.

    redis-cli 7.0 reads Heroku's ``rediss://:PASSWORD@`` as a user named "",
    so the default user is spelled out; ``--insecure`` because dynos do not
    hold the cluster CA (the server's certificate is the add-ons host's).
    """
    url = f'"${{{var}/#rediss:\\/\\/:/rediss://default:}}"'
    line = f"redis-cli --no-auth-warning --insecure -u {url}"
    return line + (f" {command}" if command else "")


@cli.command("redis:cli")
@click.argument("redis", required=False, default="")
@app_option
@click.option(
    "-c", "--command", default="", help="Run this Redis command and exit (e.g. 'INCR hits')."
)
@click.option("--no-tty", is_flag=True, help="Plain pipes even when this is a terminal.")
@with_client
def redis_cli(client: Client, redis: str, app: str, command: str, no_tty: bool) -> None:
    """Open redis-cli on the add-on in a one-off dyno of the app.

    The dyno has the attachment's URL, and its network is the only place the
    server answers (the firewall lets only attached apps' dynos through).
    """
    addon = _choose(client, app, redis)
    names = attached_names(addon, app)
    if not names:
        raise click.ClickException(f"{addon.name} is not attached to {app}")
    words = " ".join(shlex.quote(w) for w in shlex.split(command)) if command else ""
    use_tty = not no_tty and not command and sys.stdin.isatty() and sys.stdout.isatty()
    start = pb.RunDynoStart(
        app=app,
        command=cli_line(f"{names[0]}_URL", words),
        attach=True,
        tty=use_tty,
        size=terminal_size() if use_tty else None,
    )
    click.echo(f"--> Connecting to {addon.name}", err=True)
    code = AttachedRun(client, start).run()
    sys.stdout.flush()
    raise SystemExit(code)


@cli.command("redis:maxmemory")
@click.argument("redis", required=False, default="")
@app_option
@click.option(
    "-p",
    "--policy",
    required=True,
    type=click.Choice(POLICIES),
    help="What redis does at its plan's memory limit: refuse writes (noeviction, the "
    "default) or evict keys.",
)
@with_client
def redis_maxmemory(client: Client, redis: str, app: str, policy: str) -> None:
    """Set the add-on's eviction policy (kept across restarts)."""
    addon = _choose(client, app, redis)
    reply = client.run_addon_action(app, addon.name, "maxmemory-policy", app, argument=policy)
    click.echo(f"{addon.name}: {reply.message or f'maxmemory policy is now {policy}'}")


@cli.command("redis:credentials")
@click.argument("redis", required=False, default="")
@app_option
@click.option("--reset", is_flag=True, help="Replace the password; open connections end.")
@click.option("--confirm", default="", metavar="APP", help="The app's name, to go ahead.")
@with_client
def redis_credentials(client: Client, redis: str, app: str, reset: bool, confirm: str) -> None:
    """With --reset: a new password for the add-on.

    Every app the add-on is attached to gets the new URL by a release (its dynos
    restart with it).
    """
    addon = _choose(client, app, redis)
    if not reset:
        raise click.UsageError(
            f"the URL is in the app's config ({label(addon, app)}); pass --reset to replace "
            "the password"
        )
    confirm_app(app, confirm, f"this ends every open connection to {addon.name}")
    click.echo(f"Resetting the credentials of {addon.name}... ", nl=False)
    reply = client.run_addon_action(app, addon.name, "rotate-credentials", confirm)
    click.echo(f"done{released(reply)}")
    if reply.message:
        click.echo(reply.message)
