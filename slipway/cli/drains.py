"""drains, drains:add, drains:remove."""

from __future__ import annotations

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table
from slipway.client import Client

_URLS = "syslog://HOST:PORT, syslog+tls://HOST:PORT or https://[USER:PASS@]HOST/PATH"


@cli.command("drains")
@app_option
@json_option
@with_client
def drains_list(client: Client, app: str, as_json: bool) -> None:
    """List the app's log drains (passwords in URLs are hidden)."""
    drains = list(client.list_log_drains(app).drains)
    if as_json:
        emit_json(drains)
        return
    if not drains:
        click.echo(f"{app} has no drains. Add one with: slipway drains:add URL -a {app}")
        return
    heading(f"{app} Drains")
    table(["URL", "TOKEN"], [[d.url, d.token] for d in drains])


_ADD_HELP = (
    f"Send every line the app logs from now on to URL: {_URLS}.\n\n"
    "Each message carries the drain's token (shown here) as its syslog host name. "
    "Lines are delivered at least once; if the receiver is away longer than the "
    "log history lasts (1500 lines), an L10 line in the app's log says how many "
    "were dropped."
)


@cli.command("drains:add", help=_ADD_HELP)
@click.argument("url", metavar="URL")
@app_option
@json_option
@with_client
def drains_add(client: Client, url: str, app: str, as_json: bool) -> None:
    drain = client.add_log_drain(app, url).drain
    if as_json:
        emit_json(drain)
        return
    click.echo(f"Successfully added drain {drain.url}")
    click.echo(f"       token: {drain.token}")


@cli.command("drains:remove")
@click.argument("drain", metavar="URL|TOKEN")
@app_option
@with_client
def drains_remove(client: Client, drain: str, app: str) -> None:
    """Stop sending the app's log to a drain, named by its URL or token."""
    removed = client.remove_log_drain(app, drain).drain
    click.echo(f"Successfully removed drain {removed.url}")
