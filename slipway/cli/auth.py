"""login, logout, whoami."""

from __future__ import annotations

from pathlib import Path

import click

from slipway.cli import settings
from slipway.cli.base import cli
from slipway.client import Client


@cli.command("login")
@click.option("--api", "api_opt", metavar="HOST:PORT[,...]", help="Controller address(es).")
@click.option("--token", "token_opt", metavar="TOKEN", help="API token (prompted when omitted).")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The cluster CA's certificate (ca.crt): the controller's certificate is checked "
    "against it (TLS). Without it (and without SLIPWAY_CA_FILE or a saved one), plaintext.",
)
@click.pass_obj
def login(state: object, api_opt: str | None, token_opt: str | None, ca_file: Path | None) -> None:
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
    ca = ca_file or settings.resolve_ca_file()
    with Client(api, token, ca_file=ca) as client:
        name = client.whoami().token_name
    path = settings.write_file(api, token, ca_file=ca)
    over = f"TLS, CA {ca}" if ca else "plaintext"
    click.echo(f"Logged in to {api} as {name} over {over} (saved in {path})")


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
