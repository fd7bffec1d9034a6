"""config, config:get, config:set, config:unset."""

from __future__ import annotations

import shlex

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading
from slipway.cli.releases import new_release_text
from slipway.client import Client


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("A=1", "B=x=y")`` -> ``{"A": "1", "B": "x=y"}``."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        result[key] = value
    return result


@cli.command("config")
@app_option
@click.option("-s", "--shell", is_flag=True, help="Print KEY=value lines for a shell.")
@click.option(
    "--names",
    is_flag=True,
    help="Only the names (needs view; the values need operate).",
)
@json_option
@with_client
def config_show(client: Client, app: str, shell: bool, names: bool, as_json: bool) -> None:
    """Show config vars."""
    if names:
        found = client.get_config_names(app)
        if as_json:
            emit_json(found)
            return
        for name in found:
            click.echo(name)
        return
    config = dict(client.get_config(app).config)
    if as_json:
        emit_json(config)
        return
    if shell:
        for key in sorted(config):
            click.echo(f"{key}={shlex.quote(config[key])}")
        return
    if not config:
        click.echo(f"{app} has no config vars.")
        return
    heading(f"{app} Config Vars")
    width = max(len(k) for k in config)
    for key in sorted(config):
        click.echo(f"{key + ':':<{width + 1}} {config[key]}")


@cli.command("config:get")
@click.argument("key")
@app_option
@with_client
def config_get(client: Client, key: str, app: str) -> None:
    """Print one config var's value (empty when unset)."""
    click.echo(client.get_config(app).config.get(key, ""))


@cli.command("config:set")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@app_option
@json_option
@with_client
def config_set(client: Client, pairs: tuple[str, ...], app: str, as_json: bool) -> None:
    """Set config vars and make a new release."""
    values = parse_assignments(pairs)
    response = client.update_config(app, set_vars=values)
    if as_json:
        emit_json(response)
        return
    click.echo(
        f"Setting {', '.join(values)} and restarting {app}... "
        f"done, {new_release_text(response.release)}"
    )
    width = max(len(k) for k in values)
    for key in values:
        click.echo(f"{key + ':':<{width + 1}} {values[key]}")


@cli.command("config:unset")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@app_option
@json_option
@with_client
def config_unset(client: Client, keys: tuple[str, ...], app: str, as_json: bool) -> None:
    """Unset config vars and make a new release."""
    response = client.update_config(app, unset=list(keys))
    if as_json:
        emit_json(response)
        return
    click.echo(
        f"Unsetting {', '.join(keys)} and restarting {app}... "
        f"done, {new_release_text(response.release)}"
    )
