"""access, access:add, access:update, access:remove: who may do what to an app;
audit: who did."""

from __future__ import annotations

import json

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, to_dict, when
from slipway.client import Client

_PERMISSIONS = (
    "Comma-separated permissions: view (always included), deploy (builds, releases, "
    "rollback), operate (scale, restart, run, logs, config values), manage (config "
    "changes, drains, access, destroy)."
)


@cli.command("access")
@app_option
@json_option
@with_client
def access_list(client: Client, app: str, as_json: bool) -> None:
    """List the app's owner and collaborators with their permissions."""
    found = list(client.list_collaborators(app).collaborators)
    if as_json:
        emit_json(found)
        return
    heading(f"{app} Access List")
    rows = [
        [c.email, c.role or ("owner" if c.owner else "collaborator"), ",".join(c.permissions)]
        for c in found
    ]
    table(["EMAIL", "ROLE", "PERMISSIONS"], rows)


@cli.command("access:add")
@click.argument("email")
@click.option("--permissions", default="view", show_default=True, help=_PERMISSIONS)
@app_option
@json_option
@with_client
def access_add(client: Client, email: str, permissions: str, app: str, as_json: bool) -> None:
    """Give EMAIL access to the app (needs manage)."""
    added = client.add_collaborator(app, email, [permissions])
    if as_json:
        emit_json(added)
        return
    click.echo(f"Adding {added.email} access to {app} ({','.join(added.permissions)})... done")


@cli.command("access:update")
@click.argument("email")
@click.option("--permissions", required=True, help=_PERMISSIONS)
@app_option
@json_option
@with_client
def access_update(client: Client, email: str, permissions: str, app: str, as_json: bool) -> None:
    """Change what EMAIL may do to the app (needs manage)."""
    updated = client.update_collaborator(app, email, [permissions])
    if as_json:
        emit_json(updated)
        return
    click.echo(f"Updated {updated.email} on {app} to {','.join(updated.permissions)}")


@cli.command("access:remove")
@click.argument("email")
@app_option
@with_client
def access_remove(client: Client, email: str, app: str) -> None:
    """Take EMAIL's access to the app away (needs manage); it stops at once."""
    client.remove_collaborator(app, email)
    click.echo(f"Removing {email} access from {app}... done")


@cli.command("audit")
@click.option("-a", "--app", envvar="SLIPWAY_APP", metavar="APP", help="The app's trail.")
@click.option(
    "--platform", is_flag=True, help="The platform's trail (admins): users, nodes, logins."
)
@click.option("-n", "--num", default=100, show_default=True, help="The newest N records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line (JSON lines).")
@with_client
def audit(client: Client, app: str | None, platform: bool, num: int, as_json: bool) -> None:
    """Who changed what, when and from where: an app's trail, or the platform's."""
    if platform == bool(app):
        raise click.UsageError("give -a APP for an app's trail, or --platform")
    events = list(client.audit_events(app or "", num).events)
    if as_json:
        for event in events:
            click.echo(json.dumps(to_dict(event), sort_keys=True))
        return
    heading(f"{app} Audit Trail" if app else "Platform Audit Trail")
    rows = [
        [when(e.time), e.actor, e.source, e.action + (f" {e.app}" if platform else ""), e.detail]
        for e in events
    ]
    table(["TIME", "BY", "FROM", "ACTION", "DETAIL"], rows)
