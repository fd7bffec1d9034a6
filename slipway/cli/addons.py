"""addons, addons:services, addons:plans, addons:create, addons:info, addons:attach,
addons:detach, addons:upgrade, addons:destroy, addons:wait, addons:retry."""

from __future__ import annotations

import time
from collections.abc import Sequence

import click

from slipway import errors
from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb

SETTLED = ("provisioned", "failed")
POLL_SECONDS = 0.5


def _attached_as(addon: pb.Addon, app: str) -> str:
    names = [a.name for a in addon.attachments if a.app == app]
    return ", ".join(names) or "-"


@cli.command("addons")
@app_option
@json_option
@with_client
def addons_list(client: Client, app: str, as_json: bool) -> None:
    """List the add-ons of an app: those it owns and those attached to it."""
    addons = list(client.list_addons(app).addons)
    if as_json:
        emit_json(addons)
        return
    if not addons:
        click.echo(
            f"{app} has no add-ons. See what there is with `slipway addons:services`, "
            f"then `slipway addons:create SERVICE -a {app}`."
        )
        return
    heading(f"{app} Add-ons")
    table(
        ["NAME", "PLAN", "STATE", "AS", "OWNER"],
        [
            [
                a.name,
                f"{a.service}:{a.plan}",
                a.state,
                _attached_as(a, app),
                "this app" if a.app == app else a.app,
            ]
            for a in addons
        ],
    )


@cli.command("addons:services")
@json_option
@with_client
def addons_services(client: Client, as_json: bool) -> None:
    """List the add-on services this platform offers, with their plans."""
    services = list(client.list_addon_services().services)
    if as_json:
        emit_json(services)
        return
    if not services:
        click.echo(
            "No add-on services are registered. An operator registers one with "
            "`slipway-controller addons:register MANIFEST.json`."
        )
        return
    heading("Add-on services")
    table(
        ["NAME", "DESCRIPTION", "PLANS", "CONFIG VARS"],
        [
            [
                s.name,
                s.human_name,
                ", ".join(p.name for p in s.plans),
                ", ".join(s.config_vars),
            ]
            for s in services
        ],
    )


@cli.command("addons:plans")
@click.argument("service", metavar="SERVICE")
@json_option
@with_client
def addons_plans(client: Client, service: str, as_json: bool) -> None:
    """List the plans of an add-on service."""
    found = [s for s in client.list_addon_services().services if s.name == service]
    if not found:
        raise errors.NotFound(
            f"no add-on service {service!r}; `slipway addons:services` lists them"
        )
    plans = list(found[0].plans)
    if as_json:
        emit_json(plans)
        return
    heading(f"{service} plans")
    table(
        ["", "NAME", "PRICE", "DESCRIPTION"],
        [
            [
                "default" if p.default else "",
                p.name,
                f"${p.price_cents_per_month / 100:.2f}/month"
                if p.price_cents_per_month
                else "free",
                p.description,
            ]
            for p in plans
        ],
    )


def parse_options(args: Sequence[str]) -> dict[str, str]:
    """``--size=10 --fork other --ha`` -> {"size": "10", "fork": "other", "ha": "true"}."""
    out: dict[str, str] = {}
    items = list(args)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or len(item) == 2:
            raise click.UsageError(
                f"add-on options look like --NAME=VALUE (after `--`); got {item!r}"
            )
        key, sep, value = item[2:].partition("=")
        if not sep:
            value = items.pop(0) if items and not items[0].startswith("--") else "true"
        out[key] = value
    return out


@cli.command(
    "addons:create",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("service", metavar="SERVICE[:PLAN]")
@click.option("--as", "as_name", default="", metavar="NAME", help="The attachment name (DATABASE).")
@click.option("--wait", is_flag=True, help="Wait until it is provisioned, showing progress.")
@click.option(
    "--wait-timeout", default=600.0, show_default=True, metavar="SECONDS", help="With --wait."
)
@click.argument("options", nargs=-1, type=click.UNPROCESSED, metavar="[-- --OPTION=VALUE...]")
@app_option
@json_option
@with_client
def addons_create(
    client: Client,
    service: str,
    as_name: str,
    wait: bool,
    wait_timeout: float,
    options: tuple[str, ...],
    app: str,
    as_json: bool,
) -> None:
    """Create an add-on for the app and attach it.

    The provider is asked in the background; once it has made the resource its
    config vars (DATABASE_URL, ...) are set by a new release, and the app
    restarts. Options after `--` go to the provider as they are:
    `slipway addons:create SERVICE -a APP -- --version=15`.
    """
    created = client.create_addon(app, service, as_name, parse_options(options)).addon
    if not as_json:
        click.echo(f"Creating {created.name} ({created.service}:{created.plan}) on {app}...")
    if wait:
        created = _wait(client, app, created.name, wait_timeout, quiet=as_json)
    if as_json:
        emit_json(created)
        return
    names = _attached_as(created, app)
    if created.state == "provisioned":
        click.echo(f"Created {created.name} as {names}")
    elif created.state == "failed":
        raise click.ClickException(f"{created.name} failed: {created.error}")
    else:
        click.echo(
            f"{created.name} is being created in the background; {app} restarts when it is "
            f"ready. Check with: slipway addons:info {created.name} -a {app}"
        )
    click.echo(f"Use `slipway addons:info {created.name} -a {app}` to see it.")


def _progress(addon: pb.Addon) -> str:
    line = addon.state
    if addon.waiting_for_provider:
        line += ": the provider accepted it and is still making it"
    if addon.error:
        line += f": {addon.error}"
        if addon.attempts and addon.state == "provisioning":
            line += f" (attempt {addon.attempts}; trying again)"
    return line


def _wait(client: Client, app: str, addon: str, timeout: float, *, quiet: bool) -> pb.Addon:
    """Poll until the add-on settles (or is gone, when it was deprovisioning)."""
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        current = client.get_addon(app, addon).addon
        line = _progress(current)
        if line != shown and not quiet:
            click.echo(f"       {line}")
            shown = line
        released = all(a.released for a in current.attachments)
        if current.state == "failed" or (current.state == "provisioned" and released):
            return current
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"{current.name} is still {current.state} after {timeout:g} s; "
                f"`slipway addons:wait {current.name} -a {app}` waits again"
            )
        time.sleep(POLL_SECONDS)


@cli.command("addons:wait")
@click.argument("addon", required=False, default="", metavar="[ADDON]")
@click.option("--timeout", default=600.0, show_default=True, metavar="SECONDS")
@app_option
@with_client
def addons_wait(client: Client, addon: str, timeout: float, app: str) -> None:
    """Wait until the app's add-ons (or one of them) are provisioned or gone."""
    names = [addon] if addon else [a.name for a in client.list_addons(app).addons]
    for name in names:
        try:
            current = client.get_addon(app, name).addon
        except errors.NotFound:
            if addon:
                raise
            continue
        if current.state == "deprovisioning":
            _wait_gone(client, app, name, timeout)
            click.echo(f"{name}: deprovisioned")
            continue
        settled = _wait(client, app, name, timeout, quiet=False)
        if settled.state == "failed":
            raise click.ClickException(
                f"{name} failed: {settled.error}; retry it with "
                f"`slipway addons:retry {name} -a {app}`"
            )
        click.echo(f"{name}: provisioned")


def _wait_gone(client: Client, app: str, addon: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = client.get_addon(app, addon).addon
        except errors.NotFound:
            return
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"{addon} is still {current.state} after {timeout:g} s: {current.error or '-'}"
            )
        time.sleep(POLL_SECONDS)


@cli.command("addons:info")
@click.argument("addon", metavar="ADDON")
@app_option
@json_option
@with_client
def addons_info(client: Client, addon: str, app: str, as_json: bool) -> None:
    """Show an add-on: plan, state, attachments, the provider's last word."""
    a = client.get_addon(app, addon).addon
    if as_json:
        emit_json(a)
        return
    heading(a.name)
    plan = f"{a.service}:{a.plan}"
    if a.applied_plan and a.applied_plan != a.plan:
        plan += f" (changing from {a.applied_plan})"
    rows = [
        ("Plan", plan),
        ("State", _progress(a)),
        ("Owning app", a.app),
        (
            "Attachments",
            ", ".join(
                f"{t.app}::{t.name}" + ("" if t.released else " (not released yet)")
                for t in a.attachments
            )
            or "-",
        ),
        ("Config vars", ", ".join(v for t in a.attachments if t.app == app for v in t.config_vars)),
        ("Created", f"{when(a.created_at)} by {a.created_by or '-'}"),
        ("Provisioned", when(a.provisioned_at)),
        ("Message", a.message or "-"),
        ("Id", a.id),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value or '-'}")


@cli.command("addons:attach")
@click.argument("addon", metavar="ADDON")
@click.option("--as", "as_name", default="", metavar="NAME", help="The attachment name.")
@app_option
@json_option
@with_client
def addons_attach(client: Client, addon: str, as_name: str, app: str, as_json: bool) -> None:
    """Attach an existing add-on (of another app) to this app too."""
    answer = client.attach_addon(app, addon, as_name)
    if as_json:
        emit_json(answer)
        return
    a = answer.addon
    release = f", v{answer.release_version}" if answer.release_version else ""
    click.echo(f"Attaching {a.name} to {app} as {_attached_as(a, app)}... done{release}")


@cli.command("addons:detach")
@click.argument("attachment", metavar="ATTACHMENT")
@app_option
@with_client
def addons_detach(client: Client, attachment: str, app: str) -> None:
    """Detach an add-on from this app (its config vars go, by a release)."""
    answer = client.detach_addon(app, attachment)
    release = f", v{answer.release_version}" if answer.release_version else ""
    click.echo(
        f"Detaching {answer.attachment.name} ({answer.attachment.addon}) from {app}... "
        f"done{release}"
    )


@cli.command("addons:upgrade")
@click.argument("addon", metavar="ADDON")
@click.argument("plan", metavar="PLAN")
@app_option
@json_option
@with_client
def addons_upgrade(client: Client, addon: str, plan: str, app: str, as_json: bool) -> None:
    """Move an add-on to another plan of its service (the provider is asked; a
    release follows)."""
    a = client.upgrade_addon(app, addon, plan).addon
    if as_json:
        emit_json(a)
        return
    click.echo(f"Changing {a.name} to {a.service}:{a.plan}... asked of the provider")


@cli.command("addons:destroy")
@click.argument("addon", metavar="ADDON")
@click.option("--confirm", metavar="APP", help="The owning app's name again, to confirm.")
@click.option("--wait", is_flag=True, help="Wait until the provider has removed it.")
@app_option
@with_client
def addons_destroy(client: Client, addon: str, confirm: str | None, wait: bool, app: str) -> None:
    """Destroy an add-on: detached everywhere, then deprovisioned (its data is gone)."""
    if confirm is None:
        raise click.ClickException(
            f"this destroys {addon} and its data; repeat the app's name: "
            f"slipway addons:destroy {addon} -a {app} --confirm {app}"
        )
    a = client.destroy_addon(app, addon, confirm).addon
    click.echo(f"Destroying {a.name} on {app}... deprovisioning")
    if wait:
        _wait_gone(client, app, a.name, 600.0)
        click.echo(f"{a.name} is gone")


@cli.command("addons:retry")
@click.argument("addon", metavar="ADDON")
@app_option
@with_client
def addons_retry(client: Client, addon: str, app: str) -> None:
    """Provision a failed add-on again, keeping its name and attachments."""
    a = client.retry_addon(app, addon).addon
    click.echo(f"Retrying {a.name}... {a.state}")
