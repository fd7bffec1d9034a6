"""apps, apps:create, apps:info, apps:destroy."""

from __future__ import annotations

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.client import Client


@cli.command("apps")
@click.option("-t", "--team", default="", metavar="TEAM", help="Only the apps of this team.")
@json_option
@with_client
def apps_list(client: Client, team: str, as_json: bool) -> None:
    """List the apps you may see (owned, shared with you, or your teams')."""
    apps = list(client.list_apps(team).apps)
    if as_json:
        emit_json(apps)
        return
    if not apps:
        where = f" in team {team}" if team else ""
        click.echo(f"You have no apps{where}. Create one with `slipway apps:create NAME`.")
        return
    heading(f"Apps of team {team}" if team else "Apps")
    table(
        ["NAME", "OWNER", "RELEASE", "CREATED"],
        [
            [
                a.name,
                f"team {a.team}" if a.team else (a.owner or "-"),
                f"v{a.current_release}" if a.current_release else "-",
                when(a.created_at),
            ]
            for a in apps
        ],
    )


@cli.command("apps:create")
@click.argument("name", required=False, default="")
@click.option(
    "-t",
    "--team",
    default="",
    metavar="TEAM",
    help="Make the app the team's (you must be its admin or member).",
)
@json_option
@with_client
def apps_create(client: Client, name: str, team: str, as_json: bool) -> None:
    """Create an app (a name is generated when NAME is omitted)."""
    app = client.create_app(name, team).app
    if as_json:
        emit_json(app)
        return
    click.echo(f"Creating {app.name}{f' in team {team}' if team else ''}... done")
    if app.web_url:
        click.echo(app.web_url)


@cli.command("apps:info")
@app_option
@json_option
@with_client
def apps_info(client: Client, app: str, as_json: bool) -> None:
    """Show an app: release, formation, stack."""
    info = client.get_app(app)
    if as_json:
        emit_json(info)
        return
    heading(info.app.name)
    rel = info.release
    rows = [
        ("Created", when(info.app.created_at)),
        ("Owner", info.app.owner or "the platform (admins)"),
        ("Release", f"v{rel.version} ({rel.description})" if rel.version else "none yet"),
        ("Slug", rel.slug.digest[:12] if rel.slug.digest else "none (nothing deployed)"),
        ("Stack", info.app.stack or "-"),
        ("Buildpacks", ", ".join(info.app.buildpacks) or "auto-detect"),
        ("Web URL", info.app.web_url or "-"),
        (
            "Dynos",
            ", ".join(f"{f.type}: {f.quantity} ({f.size})" for f in info.formation) or "none",
        ),
    ]
    addons = client.list_addons(app).addons
    shown = [f"{a.name} ({a.service}:{a.plan}, {a.state})" for a in addons]
    rows.append(("Add-ons", ", ".join(shown) or "none"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")


@cli.command("apps:destroy")
@app_option
@click.option("--confirm", metavar="APP", help="The app's name again, to confirm.")
@with_client
def apps_destroy(client: Client, app: str, confirm: str | None) -> None:
    """Destroy an app and everything it owns (needs --confirm APP)."""
    if confirm is None:
        raise click.ClickException(
            f"this destroys {app} with its releases and config; repeat the name: "
            f"slipway apps:destroy -a {app} --confirm {app}"
        )
    client.destroy_app(app, confirm)
    click.echo(f"Destroying {app}... done")
