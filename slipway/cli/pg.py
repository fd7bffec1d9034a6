"""pg:info, pg:psql, pg:credentials:rotate, pg:reset, pg:backups:*: the built-in
PostgreSQL add-ons.

DATABASE names one of the app's postgresql add-ons: an attachment name
(``DATABASE``, ``DATABASE_URL``, ``HEROKU_POSTGRESQL_RED``) or the add-on's
name. Without it: the one attached as DATABASE, else the only one there is.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from slipway import errors
from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.cli.run import AttachedRun, terminal_size
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb

SERVICE = "postgresql"
GB = 1024**3
MB = 1024**2
POLL_SECONDS = 1.0


def _databases(client: Client, app: str) -> list[pb.Addon]:
    return [a for a in client.list_addons(app).addons if a.service == SERVICE]


def attached_names(addon: pb.Addon, app: str) -> list[str]:
    return [a.name for a in addon.attachments if a.app == app]


def label(addon: pb.Addon, app: str) -> str:
    """How the app knows the database: its URL vars, else the add-on's name."""
    return ", ".join(f"{n}_URL" for n in attached_names(addon, app)) or addon.name


def choose(
    addons: list[pb.Addon],
    app: str,
    ref: str,
    *,
    service: str = SERVICE,
    default_attachment: str = "DATABASE",
) -> pb.Addon:
    """Pure: the add-on DATABASE names (see the module doc); the redis:* commands
    choose theirs the same way, REDIS first."""
    if not addons:
        raise errors.NotFound(
            f"{app} has no {service} add-on; make one with "
            f"`slipway addons:create {service} -a {app}`",
            reason="no_database",
        )
    if ref:
        wanted = ref.removesuffix("_URL")
        for addon in addons:
            if addon.name == ref or wanted in attached_names(addon, app):
                return addon
        known = ", ".join(f"{n}_URL" for a in addons for n in attached_names(a, app))
        raise errors.NotFound(
            f"no {service} add-on {ref!r} on {app}; it has {known or 'none attached'}",
            reason="no_database",
        )
    for addon in addons:
        if default_attachment in attached_names(addon, app):
            return addon
    if len(addons) == 1:
        return addons[0]
    names = ", ".join(a.name for a in addons)
    raise errors.FailedPrecondition(
        f"{app} has several {service} add-ons ({names}); name one", reason="which_database"
    )


def size(n: int) -> str:
    if n >= GB:
        return f"{n / GB:.1f} GB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / 1024:.0f} kB"


def info_lines(addon: pb.Addon, details: dict[str, Any]) -> list[tuple[str, str]]:
    """Pure: the rows of pg:info for one database."""
    limit = int(details.get("storage_limit_bytes") or 0)
    used = int(details.get("data_size_bytes") or 0)
    data = size(used)
    if limit:
        data += f" / {size(limit)} ({100 * used / limit:.2f}%)"
    connections = str(details.get("connections", "?"))
    if details.get("connection_limit"):
        connections += f"/{details['connection_limit']}"
    status = "Available"
    if details.get("read_only"):
        status = "Read-only: over its plan's storage limit (delete data or upgrade)"
    restore = details.get("restore") or {}
    if restore.get("state") == "running":
        status = f"Restoring {restore.get('backup', '')}"
    elif restore.get("state") == "failed":
        status += f" (the last restore, of {restore.get('backup')}, failed: {restore.get('error')})"
    return [
        ("Plan", f"{addon.plan} ({details.get('plan_description', '')})".replace(" ()", "")),
        ("Status", status),
        ("Connections", connections),
        ("PG Version", str(details.get("version", "?"))),
        ("Created", when(addon.created_at)),
        ("Data Size", data),
        ("Tables", str(details.get("tables", "?"))),
        ("Add-on", addon.name),
    ]


@cli.command("pg:info")
@click.argument("database", required=False, default="")
@app_option
@json_option
@with_client
def pg_info(client: Client, database: str, app: str, as_json: bool) -> None:
    """Plan, status, connections, size and version of the app's databases."""
    addons = _databases(client, app)
    chosen = [choose(addons, app, database)] if database or not addons else addons
    show_info(client, app, chosen, info_lines, as_json)


def show_info(
    client: Client,
    app: str,
    chosen: list[pb.Addon],
    lines: Callable[[pb.Addon, dict[str, Any]], list[tuple[str, str]]],
    as_json: bool,
) -> None:
    """pg:info's and redis:info's output: a block of ``lines`` per add-on, or JSON."""
    out = []
    for addon in chosen:
        details = json.loads(client.addon_details(app, addon.name).details_json or "{}")
        if as_json:
            out.append({"addon": addon.name, "attachments": attached_names(addon, app), **details})
            continue
        heading(label(addon, app))
        rows = lines(addon, details)
        width = max(len(k) for k, _ in rows) + 1
        for key, value in rows:
            click.echo(f"{key + ':':<{width}} {value}")
        click.echo("")
    if as_json:
        emit_json(out)


def confirm_app(app: str, confirm: str, what: str) -> None:
    if confirm != app:
        raise click.ClickException(
            f"{what}; to proceed, type the app's name: --confirm {app}"
            + ("" if not confirm else f" (got {confirm!r})")
        )


def released(reply: pb.RunAddonActionResponse) -> str:
    versions = ", ".join(f"v{v}" for v in reply.release_versions)
    return f"; released as {versions}" if versions else ""


@cli.command("pg:credentials:rotate")
@click.argument("database", required=False, default="")
@app_option
@click.option("--confirm", default="", metavar="APP", help="The app's name, to go ahead.")
@with_client
def pg_credentials_rotate(client: Client, database: str, app: str, confirm: str) -> None:
    """A new password for the database's role; open sessions end.

    Every app the database is attached to gets the new URL by a release (its dynos
    restart with it).
    """
    addon = choose(_databases(client, app), app, database)
    confirm_app(app, confirm, f"this ends every open connection to {addon.name}")
    click.echo(f"Rotating the credentials of {addon.name}... ", nl=False)
    reply = client.run_addon_action(app, addon.name, "rotate-credentials", confirm)
    click.echo(f"done{released(reply)}")
    if reply.message:
        click.echo(reply.message)


@cli.command("pg:reset")
@click.argument("database", required=False, default="")
@app_option
@click.option("--confirm", default="", metavar="APP", help="The app's name, to go ahead.")
@with_client
def pg_reset(client: Client, database: str, app: str, confirm: str) -> None:
    """Delete every table and row: the database is as new (its URL stays)."""
    addon = choose(_databases(client, app), app, database)
    confirm_app(app, confirm, f"this destroys all data in {addon.name}")
    click.echo(f"Resetting {addon.name}... ", nl=False)
    reply = client.run_addon_action(app, addon.name, "reset", confirm)
    click.echo("done")
    if reply.message:
        click.echo(reply.message)


@cli.command("pg:psql")
@click.argument("database", required=False, default="")
@app_option
@click.option("-c", "--command", default="", help="Run this SQL and exit.")
@click.option("--no-tty", is_flag=True, help="Plain pipes even when this is a terminal.")
@with_client
def pg_psql(client: Client, database: str, app: str, command: str, no_tty: bool) -> None:
    """Open psql on the database in a one-off dyno of the app.

    The dyno has the attachment's URL, and its network is the only place the
    database answers (the firewall lets only attached apps' dynos through).
    """
    addon = choose(_databases(client, app), app, database)
    names = attached_names(addon, app)
    if not names:
        raise click.ClickException(f"{addon.name} is not attached to {app}")
    var = f"{names[0]}_URL"
    line = f'psql "${var}"' + (f" -c {shlex.quote(command)}" if command else "")
    use_tty = not no_tty and not command and sys.stdin.isatty() and sys.stdout.isatty()
    start = pb.RunDynoStart(
        app=app, command=line, attach=True, tty=use_tty, size=terminal_size() if use_tty else None
    )
    click.echo(f"--> Connecting to {addon.name}", err=True)
    code = AttachedRun(client, start).run()
    sys.stdout.flush()
    raise SystemExit(code)


def backup_rows(addon: pb.Addon, app: str, details: dict[str, Any]) -> list[list[str]]:
    """Pure: one row per backup of one database, newest first."""
    source = label(addon, app)
    rows = []
    for backup in reversed(details.get("backups") or []):
        taken = datetime.fromtimestamp(float(backup["created_at"])).astimezone()
        rows.append(
            [
                backup["id"],
                taken.strftime("%Y-%m-%d %H:%M:%S %z"),
                backup_status(backup),
                size(int(backup["size_bytes"])) if backup.get("size_bytes") else "-",
                source,
            ]
        )
    return rows


def backup_status(backup: dict[str, Any]) -> str:
    state = str(backup.get("state", "completed"))
    if state == "failed":
        return f"Failed: {backup.get('error', '')}".strip()
    return state.capitalize()


@cli.command("pg:backups")
@app_option
@json_option
@with_client
def pg_backups(client: Client, app: str, as_json: bool) -> None:
    """The backups of the app's databases, newest first.

    Backups are logical (pg_dump's custom format) and kept in the cluster's object
    store; each plan keeps a number of captured ones (essential: 5, standard: 25)
    and a capture past it expires the oldest; scheduled ones (a001...) are kept 7.
    """
    rows: list[list[str]] = []
    out = []
    for addon in _databases(client, app):
        details = json.loads(client.addon_details(app, addon.name).details_json or "{}")
        rows += backup_rows(addon, app, details)
        out += [{"addon": addon.name, **b} for b in details.get("backups") or []]
    if as_json:
        emit_json(out)
    elif rows:
        table(["ID", "Taken", "Status", "Size", "Database"], rows)
    else:
        click.echo(f"{app} has no backups; capture one with `slipway pg:backups:capture -a {app}`")


@cli.command("pg:backups:capture")
@click.argument("database", required=False, default="")
@click.option(
    "--timeout",
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to watch the capture (it goes on after that).",
)
@app_option
@with_client
def pg_backups_capture(client: Client, database: str, timeout: float, app: str) -> None:
    """Take a backup of the database now (it stays usable meanwhile).

    The capture runs on the add-ons host; Ctrl-C stops watching it, not the
    capture (`slipway pg:backups` shows how it ended).
    """
    addon = choose(_databases(client, app), app, database)
    source = label(addon, app)
    click.echo(f"{addon.name} ({source}) ----backup---> ", nl=False)
    # Every add-on action carries the app's name as confirmation; capturing
    # destroys nothing, so the command gives it without asking.
    reply = client.run_addon_action(app, addon.name, "backup-capture", app)
    backup_id = reply.message.removeprefix("backup ").split(" ", 1)[0]
    click.echo(backup_id)
    click.echo("Capturing... ", nl=False)
    deadline = time.monotonic() + timeout
    while True:
        details = json.loads(client.addon_details(app, addon.name).details_json or "{}")
        found = next((b for b in details.get("backups") or [] if b["id"] == backup_id), None)
        state = found.get("state", "completed") if found else "gone"
        if state == "completed" and found is not None:
            click.echo(f"done, {size(int(found['size_bytes']))}")
            click.echo(f"Backup {backup_id} complete (`slipway pg:backups:download {backup_id}`)")
            return
        if state != "running":
            click.echo("failed")
            raise click.ClickException(
                f"backup {backup_id} failed: {found.get('error', '') if found else 'it is gone'}"
            )
        if time.monotonic() > deadline:
            click.echo("still running")
            click.echo(f"It goes on; `slipway pg:backups -a {app}` shows when it is done.")
            return
        time.sleep(POLL_SECONDS)


@cli.command("pg:backups:restore")
@click.argument("backup", required=False, default="")
@click.argument("database", required=False, default="")
@app_option
@click.option("--confirm", default="", metavar="APP", help="The app's name, to go ahead.")
@click.option(
    "--timeout",
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to watch the restore (it goes on after that).",
)
@with_client
def pg_backups_restore(
    client: Client, backup: str, database: str, app: str, confirm: str, timeout: float
) -> None:
    """Make the database what BACKUP (default: the latest) holds.

    Everything written since is gone, tables made since included; the URL stays.
    The restore runs on the add-ons host; Ctrl-C stops watching it, not the restore.
    """
    addon = choose(_databases(client, app), app, database)
    what = backup or "the latest backup"
    confirm_app(app, confirm, f"this replaces all data in {addon.name} with {what}")
    reply = client.run_addon_action(app, addon.name, "backup-restore", confirm, backup)
    backup_id = reply.message.removeprefix("restore of backup ").split(" ", 1)[0]
    click.echo(f"Restoring {backup_id} to {addon.name}... ", nl=False)
    deadline = time.monotonic() + timeout
    while True:
        details = json.loads(client.addon_details(app, addon.name).details_json or "{}")
        state = details.get("restore") or {}
        if state.get("backup") == backup_id and state.get("state") == "completed":
            click.echo("done")
            return
        if state.get("backup") == backup_id and state.get("state") == "failed":
            click.echo("failed")
            raise click.ClickException(f"restore of {backup_id} failed: {state.get('error', '')}")
        if time.monotonic() > deadline:
            click.echo("still running")
            click.echo(f"It goes on; `slipway pg:info -a {app}` shows when it is done.")
            return
        time.sleep(POLL_SECONDS)


@cli.command("pg:backups:delete")
@click.argument("backup")
@click.argument("database", required=False, default="")
@app_option
@click.option("--confirm", default="", metavar="APP", help="The app's name, to go ahead.")
@with_client
def pg_backups_delete(client: Client, backup: str, database: str, app: str, confirm: str) -> None:
    """Delete one backup."""
    addon = choose(_databases(client, app), app, database)
    confirm_app(app, confirm, f"this deletes {backup} of {addon.name} for good")
    reply = client.run_addon_action(app, addon.name, "backup-delete", confirm, backup)
    click.echo(reply.message[:1].upper() + reply.message[1:])


@cli.command("pg:backups:schedule")
@click.argument("database", required=False, default="")
@click.option("--at", "at", required=True, metavar="HH:MM", help="Time of day, UTC.")
@app_option
@with_client
def pg_backups_schedule(client: Client, database: str, at: str, app: str) -> None:
    """Back the database up every day at a time (UTC).

    \b
      slipway pg:backups:schedule DATABASE_URL --at 02:00 -a myapp

    Scheduled backups are named a001, a002, ... and the last 7 are kept, apart
    from the ones you capture by hand.
    """
    addon = choose(_databases(client, app), app, database)
    reply = client.run_addon_action(app, addon.name, "backup-schedule", app, at)
    click.echo(reply.message[:1].upper() + reply.message[1:])


@cli.command("pg:backups:unschedule")
@click.argument("database", required=False, default="")
@app_option
@with_client
def pg_backups_unschedule(client: Client, database: str, app: str) -> None:
    """Stop the database's daily backups (the backups taken stay)."""
    addon = choose(_databases(client, app), app, database)
    reply = client.run_addon_action(app, addon.name, "backup-unschedule", app)
    click.echo(reply.message[:1].upper() + reply.message[1:])


@cli.command("pg:backups:schedules")
@app_option
@json_option
@with_client
def pg_backups_schedules(client: Client, app: str, as_json: bool) -> None:
    """The daily backup schedules of the app's databases."""
    rows = []
    for addon in _databases(client, app):
        details = json.loads(client.addon_details(app, addon.name).details_json or "{}")
        if details.get("backup_schedule"):
            rows.append({"addon": addon.name, "at": details["backup_schedule"]})
    if as_json:
        emit_json(rows)
    elif rows:
        for row in rows:
            click.echo(f"{row['addon']}: daily at {row['at']} UTC")
    else:
        click.echo(
            f"{app} has no backup schedules; add one with"
            f" `slipway pg:backups:schedule --at 02:00 -a {app}`"
        )


@cli.command("pg:backups:download")
@click.argument("backup", required=False, default="")
@click.argument("database", required=False, default="")
@click.option(
    "-o",
    "--output",
    default="latest.dump",
    show_default=True,
    metavar="FILE",
    help="Where to write it (- for standard output).",
)
@app_option
@with_client
def pg_backups_download(client: Client, backup: str, database: str, output: str, app: str) -> None:
    """Download BACKUP (default: the latest) of the database.

    \b
      slipway pg:backups:download -a myapp
      pg_restore --no-owner -d postgres://localhost/mydb latest.dump

    The file is pg_dump's custom format; it is written whole or not at all.
    """
    addon = choose(_databases(client, app), app, database)
    to_stdout = output == "-"
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    received = total = 0
    shown = -1
    sink = sys.stdout.buffer if to_stdout else partial.open("wb")
    try:
        for item in client.download_addon_backup(app, addon.name, backup):
            if item.WhichOneof("body") == "backup":
                total = item.backup.size_bytes
                name = item.backup.id
                click.echo(f"Downloading {name} of {addon.name} ({size(total)})...", err=True)
                continue
            sink.write(item.chunk)
            received += len(item.chunk)
            percent = received * 100 // total if total else 100
            if percent // 10 != shown // 10:
                shown = percent
                click.echo(f"       {percent}%", err=True)
        if received != total:
            raise click.ClickException(f"got {received} of {total} bytes; try again")
    except BaseException:
        if not to_stdout:
            sink.close()
            partial.unlink(missing_ok=True)
        raise
    if not to_stdout:
        sink.close()
        partial.replace(target)
        click.echo(f"Saved {name} to {target} ({size(received)})", err=True)
