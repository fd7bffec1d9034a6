"""teams, teams:create, teams:destroy, members, members:add, members:set,
members:remove: teams that own apps, and their members' roles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from slipway.cli.base import cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.client import Client

_ROLES = click.Choice(["admin", "member", "viewer"])
_ROLE_HELP = (
    "admin: every permission on the team's apps and its membership; member: view, "
    "deploy, operate, and may create apps in the team; viewer: view."
)


def team_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-t",
        "--team",
        "team",
        required=True,
        envvar="SLIPWAY_TEAM",
        metavar="TEAM",
        help="The team to act on. Env: SLIPWAY_TEAM.",
    )(func)


@cli.command("teams")
@json_option
@with_client
def teams_list(client: Client, as_json: bool) -> None:
    """List the teams you belong to (admins: every team)."""
    teams = client.list_teams()
    if as_json:
        emit_json(teams)
        return
    if not teams:
        click.echo("You are in no team. Make one with `slipway teams:create NAME`.")
        return
    heading("Teams")
    rows = [[t.name, t.role or "-", t.members, t.apps, when(t.created_at)] for t in teams]
    table(["NAME", "ROLE", "MEMBERS", "APPS", "CREATED"], rows)


@cli.command("teams:create")
@click.argument("name")
@json_option
@with_client
def teams_create(client: Client, name: str, as_json: bool) -> None:
    """Create a team; you become its first admin."""
    team = client.create_team(name)
    if as_json:
        emit_json(team)
        return
    click.echo(f"Creating team {team.name}... done (you are its admin)")
    click.echo(f"Add people with `slipway members:add EMAIL --role member -t {team.name}`.")


@cli.command("teams:destroy")
@team_option
@click.option("--confirm", metavar="TEAM", help="The team's name again, to confirm.")
@with_client
def teams_destroy(client: Client, team: str, confirm: str | None) -> None:
    """Destroy a team that owns no apps (team admins)."""
    if confirm is None:
        raise click.ClickException(
            f"this removes team {team} and every membership in it; repeat the name: "
            f"slipway teams:destroy -t {team} --confirm {team}"
        )
    client.destroy_team(team, confirm)
    click.echo(f"Destroying team {team}... done")


@cli.command("members")
@team_option
@json_option
@with_client
def members_list(client: Client, team: str, as_json: bool) -> None:
    """List the team's members and their roles."""
    members = client.list_team_members(team)
    if as_json:
        emit_json(members)
        return
    heading(f"{team} Members")
    rows = [[m.email, m.role, m.added_by, when(m.added_at)] for m in members]
    table(["EMAIL", "ROLE", "ADDED BY", "ADDED"], rows)


@cli.command("members:add")
@click.argument("email")
@click.option("--role", type=_ROLES, default="member", show_default=True, help=_ROLE_HELP)
@team_option
@json_option
@with_client
def members_add(client: Client, email: str, role: str, team: str, as_json: bool) -> None:
    """Add EMAIL to the team (team admins)."""
    member = client.set_team_member(team, email, role)
    if as_json:
        emit_json(member)
        return
    click.echo(f"Adding {member.email} to {team} as {member.role}... done")


@cli.command("members:set")
@click.argument("email")
@click.option("--role", type=_ROLES, required=True, help=_ROLE_HELP)
@team_option
@json_option
@with_client
def members_set(client: Client, email: str, role: str, team: str, as_json: bool) -> None:
    """Change EMAIL's role in the team (team admins; a team keeps one admin)."""
    member = client.set_team_member(team, email, role, update=True)
    if as_json:
        emit_json(member)
        return
    click.echo(f"Setting {member.email} in {team} to {member.role}... done")


@cli.command("members:remove")
@click.argument("email")
@team_option
@with_client
def members_remove(client: Client, email: str, team: str) -> None:
    """Take EMAIL out of the team (team admins); their team access stops at once."""
    client.remove_team_member(team, email)
    click.echo(f"Removing {email} from {team}... done")
