"""login, logout, whoami and auth:*; users:* (admins)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from slipway import duration
from slipway.cli import settings
from slipway.cli.base import cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.client import Client


def _read_password(from_stdin: bool, prompt: str = "Password", confirm: bool = False) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


@cli.command("login")
@click.option("--api", "api_opt", metavar="HOST:PORT[,...]", help="Controller address(es).")
@click.option("--email", metavar="EMAIL", help="Log in as this account (password prompted).")
@click.option("--password-stdin", is_flag=True, help="With --email: read the password from stdin.")
@click.option("--token", "token_opt", metavar="TOKEN", help="Use this API token instead.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The cluster CA's certificate (ca.crt): the controller's certificate is checked "
    "against it (TLS). Without it (and without SLIPWAY_CA_FILE or a saved one), plaintext.",
)
@click.pass_obj
def login(
    state: object,
    api_opt: str | None,
    email: str | None,
    password_stdin: bool,
    token_opt: str | None,
    ca_file: Path | None,
) -> None:
    """Log in with an email and password (or an API token) and save the token.

    With neither --email nor --token it asks for an email; leave it empty to
    paste a token instead."""
    api = (
        api_opt
        or getattr(state, "api_flag", None)
        or settings.read_file().get("api")
        or settings.DEFAULT_API
    )
    ca = ca_file or settings.resolve_ca_file()
    token = token_opt or getattr(state, "token_flag", None)
    if not token and not email:
        email = click.prompt("Email (empty to paste a token)", default="", show_default=False)
    if not token and email:
        password = _read_password(password_stdin)
        with Client(api, "", ca_file=ca) as anonymous:
            token = anonymous.login(email, password).token
    if not token:
        token = click.prompt("Token", hide_input=True)
    with Client(api, token, ca_file=ca) as client:
        me = client.whoami()
    path = settings.write_file(api, token, ca_file=ca)
    over = f"TLS, CA {ca}" if ca else "plaintext"
    click.echo(f"Logged in to {api} as {me.email or me.token_name} over {over} (saved in {path})")


@cli.command("logout")
def logout() -> None:
    """Forget the saved token (it keeps working until revoked or expired)."""
    path = settings.config_path()
    if path.exists():
        path.unlink()
        click.echo(f"Logged out (removed {path})")
    else:
        click.echo("Not logged in.")


cli.add_command(logout, "auth:logout")


@cli.command("whoami")
@json_option
@with_client
def whoami(client: Client, as_json: bool) -> None:
    """Show who the token in use acts for, and the controller it talks to."""
    me = client.whoami()
    if as_json:
        emit_json(me)
        return
    who = me.email or f"operator token {me.token_name}"
    extra = [s for s in ("admin" if me.admin else "", f"scope {me.scope}") if s]
    click.echo(f"{who} ({', '.join(extra)}) @ {','.join(client.addresses)}")


cli.add_command(whoami, "auth:whoami")


@cli.command("auth:token")
@click.pass_obj
def auth_token(state: object) -> None:
    """Print the API token in use (for scripts: SLIPWAY_TOKEN=$(slipway auth:token))."""
    resolved = settings.resolve(
        getattr(state, "api_flag", None), getattr(state, "token_flag", None)
    )
    click.echo(resolved.token)


# -- users (platform admins) -------------------------------------------------------


@cli.command("users")
@json_option
@with_client
def users_list(client: Client, as_json: bool) -> None:
    """List the platform's accounts (admins only)."""
    users = list(client.list_users().users)
    if as_json:
        emit_json(users)
        return
    heading("Users")
    rows = [
        [u.email, "admin" if u.admin else "", "yes" if u.has_password else "no (token only)"]
        for u in users
    ]
    table(["EMAIL", "ROLE", "PASSWORD"], rows)


@cli.command("users:create")
@click.argument("email")
@click.option("--admin", is_flag=True, help="A platform admin: every app, users and nodes.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the new password from stdin. Without it you are asked for one; "
    "an empty answer makes an account without a password.",
)
@json_option
@with_client
def users_create(
    client: Client, email: str, admin: bool, password_stdin: bool, as_json: bool
) -> None:
    """Add a person to the platform (admins only)."""
    if password_stdin:
        password = _read_password(True)
    else:
        password = click.prompt(
            "Password (empty: none)", default="", hide_input=True, show_default=False
        )
    user = client.create_user(email, password, admin)
    if as_json:
        emit_json(user)
        return
    click.echo(f"Created {'admin' if user.admin else 'user'} {user.email}")


@cli.command("users:remove")
@click.argument("email")
@click.option("--confirm", metavar="EMAIL", help="Repeat the email to skip the question.")
@with_client
def users_remove(client: Client, email: str, confirm: str | None) -> None:
    """Remove an account, its tokens and its access to apps (admins only)."""
    if confirm != email:
        click.confirm(f"Remove {email} and every token of it?", abort=True)
    revoked = client.remove_user(email).tokens_revoked
    click.echo(f"Removed {email} ({revoked} token(s) revoked)")


# -- the caller's named tokens ---------------------------------------------------------


@cli.command("authorizations")
@json_option
@with_client
def authorizations_list(client: Client, as_json: bool) -> None:
    """List your tokens: logins and the ones made with authorizations:create."""
    found = list(client.list_authorizations().authorizations)
    if as_json:
        emit_json(found)
        return
    heading("Authorizations")
    rows = [
        [
            a.id,
            a.description or "-",
            a.scope,
            when(a.created_at),
            when(a.expires_at) if a.HasField("expires_at") else "never",
        ]
        for a in found
    ]
    table(["ID", "DESCRIPTION", "SCOPE", "CREATED", "EXPIRES"], rows)


@cli.command("authorizations:create")
@click.option("--description", "-d", default="", help="What the token is for.")
@click.option(
    "--scope",
    type=click.Choice(["global", "write", "read"]),
    default="global",
    show_default=True,
    help="read: nothing that changes; write: apps, not accounts or access; global: all.",
)
@click.option("--expires-in", metavar="DURATION", help="e.g. 3600s, 12h, 30d (default: never).")
@json_option
@with_client
def authorizations_create(
    client: Client, description: str, scope: str, expires_in: str | None, as_json: bool
) -> None:
    """Make a token for a script or CI; it is shown once."""
    try:
        lifetime = duration.seconds(expires_in) if expires_in else 0
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from None
    made = client.create_authorization(description, scope, lifetime)
    if as_json:
        emit_json(made)
        return
    click.echo(f"Created authorization {made.authorization.id} (scope {scope})")
    click.echo(f"  Token: {made.token}")


@cli.command("authorizations:revoke")
@click.argument("token_id", metavar="ID")
@with_client
def authorizations_revoke(client: Client, token_id: str) -> None:
    """Revoke one of your tokens by its ID (see `slipway authorizations`)."""
    client.revoke_authorization(token_id)
    click.echo(f"Revoked authorization {token_id}")
