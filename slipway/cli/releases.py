"""releases, releases:info, releases:rollback."""

from __future__ import annotations

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.client import Client
from slipway.v1 import types_pb2

_STATUS = {
    types_pb2.RELEASE_STATUS_PENDING: "pending",
    types_pb2.RELEASE_STATUS_FAILED: "failed",
}


def new_release_text(release: types_pb2.Release) -> str:
    """``v7``, or ``v7 (release phase running)`` while it waits for its release command."""
    if release.status == types_pb2.RELEASE_STATUS_PENDING:
        return f"v{release.version} (release phase running)"
    return f"v{release.version}"


def parse_version(text: str) -> int:
    raw = text.lower().removeprefix("v")
    if not raw.isdigit() or int(raw) <= 0:
        raise click.BadParameter(f"{text!r} is not a release like v3", param_hint="VERSION")
    return int(raw)


@cli.command("releases")
@app_option
@click.option(
    "-n", "--num", default=15, show_default=True, help="How many releases to show (0: all)."
)
@json_option
@with_client
def releases_list(client: Client, app: str, num: int, as_json: bool) -> None:
    """List releases, newest first."""
    releases = list(client.list_releases(app, num).releases)
    if as_json:
        emit_json(releases)
        return
    if not releases:
        click.echo(f"{app} has no releases yet.")
        return
    heading(f"{app} Releases")
    table(
        ["VERSION", "DESCRIPTION", "BY", "CREATED"],
        [
            [
                f"v{r.version}",
                r.description + (f" ({_STATUS[r.status]})" if r.status in _STATUS else ""),
                r.created_by,
                when(r.created_at),
            ]
            for r in releases
        ],
    )


@cli.command("releases:info")
@click.argument("version", required=False)
@app_option
@json_option
@with_client
def releases_info(client: Client, version: str | None, app: str, as_json: bool) -> None:
    """Show one release (the current one by default)."""
    release = client.get_release(app, parse_version(version) if version else 0).release
    if as_json:
        emit_json(release)
        return
    heading(f"Release v{release.version}")
    rows = [
        ("Description", release.description),
        ("By", release.created_by),
        ("When", when(release.created_at)),
        ("Status", _STATUS.get(release.status, "succeeded")),
        ("Slug", release.slug.digest or "none"),
        (
            "Process types",
            ", ".join(f"{k}: {v}" for k, v in sorted(release.process_types.items())) or "none",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")
    if release.config:
        heading("Config vars")
        cw = max(len(k) for k in release.config)
        for key in sorted(release.config):
            click.echo(f"{key + ':':<{cw + 1}} {release.config[key]}")


@cli.command("releases:rollback")
@click.argument("version", required=False)
@app_option
@json_option
@with_client
def releases_rollback(client: Client, version: str | None, app: str, as_json: bool) -> None:
    """Roll back to VERSION (default: the previous release) as a new release."""
    release = client.rollback(app, parse_version(version) if version else 0).release
    if as_json:
        emit_json(release)
        return
    click.echo(f"Rolling back {app}... done, {new_release_text(release)}")
    click.echo(f"{release.description}: new release v{release.version} created")
