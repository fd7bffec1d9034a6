"""login, logout, whoami."""

from __future__ import annotations

import click

from slipway.cli import settings
from slipway.cli.base import cli
from slipway.client import Client


@cli.command("login")
@click.option("--api", "api_opt", metavar="HOST:PORT[,...]", help="Controller address(es).")
@click.option("--token", "token_opt", metavar="TOKEN", help="API token (prompted when omitted).")
@click.pass_obj
def login(state: object, api_opt: str | None, token_opt: str | None) -> None:
    """Check a token against the controller and save it for later commands."""
    api = (
        api_opt
        or getattr(state, "api_flag", None)
        or settings.read_file().get("api")
        or settings.DEFAULT_API
    )
    token = (
        token_opt or getattr(state, "token_flag", None) or click.prompt("Token", hide_input=True)
    )
    with Client(api, token) as client:
        name = client.whoami().token_name
    path = settings.write_file(api, token)
    click.echo(f"Logged in to {api} as {name} (saved in {path})")


@cli.command("logout")
def logout() -> None:
    """Forget the saved token."""
    path = settings.config_path()
    if path.exists():
        path.unlink()
        click.echo(f"Logged out (removed {path})")
    else:
        click.echo("Not logged in.")


@cli.command("whoami")
@click.pass_obj
def whoami(state: object) -> None:
    """Show the token name in use and the controller it talks to."""
    client: Client = state.client  # type: ignore[attr-defined]
    click.echo(f"{client.whoami().token_name} @ {','.join(client.addresses)}")
