"""ps:scale and ps:type (formation)."""

from __future__ import annotations

import re

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import types_pb2

_SCALE_RE = re.compile(r"^(?P<type>[a-z][a-z0-9_-]*)(?P<op>=|\+|-)(?P<rest>.*)$")


def parse_scale(arg: str) -> pb.FormationChange:
    """``web=3``, ``web+1``, ``web-2``, ``worker=1:standard-2x``, ``web=standard-2x``."""
    match = _SCALE_RE.match(arg)
    if not match:
        raise click.BadParameter(
            f"{arg!r}: use TYPE=N, TYPE+N, TYPE-N or TYPE=N:SIZE", param_hint="TYPE=N"
        )
    ptype, op, rest = match["type"], match["op"], match["rest"]
    amount, _, size = rest.partition(":")
    change = pb.FormationChange(type=ptype, size=size.lower())
    if op == "=":
        if amount.isdigit():
            change.quantity = int(amount)
        elif amount and not size:
            change.size = amount.lower()  # web=standard-2x: resize only
        else:
            raise click.BadParameter(f"{arg!r}: {amount!r} is not a number", param_hint="TYPE=N")
    else:
        if not amount.isdigit():
            raise click.BadParameter(f"{arg!r}: {amount!r} is not a number", param_hint="TYPE+N")
        change.delta = int(amount) if op == "+" else -int(amount)
    return change


def _print_formation(app: str, entries: list[types_pb2.FormationEntry]) -> None:
    if not entries:
        click.echo(f"{app} has no process types yet; deploy code with a Procfile first.")
        return
    heading(f"{app} Formation")
    table(
        ["TYPE", "QTY", "SIZE", "COMMAND"],
        [[e.type, e.quantity, e.size, e.command or "-"] for e in entries],
    )


@cli.command("ps:scale")
@click.argument("changes", nargs=-1, required=True, metavar="TYPE=N[:SIZE]...")
@app_option
@json_option
@with_client
def ps_scale(client: Client, changes: tuple[str, ...], app: str, as_json: bool) -> None:
    """Scale process types: web=3, worker+1, web=2:standard-2x."""
    parsed = [parse_scale(c) for c in changes]
    formation = list(client.scale(app, parsed).formation)
    if as_json:
        emit_json(formation)
        return
    touched = {c.type for c in parsed}
    summary = ", ".join(
        f"{e.type} at {e.quantity}:{e.size}" for e in formation if e.type in touched
    )
    click.echo(f"Scaling dynos... done, now running {summary}")


@cli.command("ps:type")
@click.argument("changes", nargs=-1, metavar="[TYPE=SIZE]...")
@app_option
@json_option
@with_client
def ps_type(client: Client, changes: tuple[str, ...], app: str, as_json: bool) -> None:
    """Show the formation, or change sizes: ps:type web=standard-2x."""
    if changes:
        parsed = []
        for change in changes:
            ptype, sep, size = change.partition("=")
            if not sep or not size or size.isdigit():
                raise click.BadParameter(f"{change!r}: use TYPE=SIZE", param_hint="TYPE=SIZE")
            parsed.append(pb.FormationChange(type=ptype, size=size.lower()))
        formation = list(client.scale(app, parsed).formation)
    else:
        formation = list(client.get_formation(app).formation)
    if as_json:
        emit_json(formation)
        return
    _print_formation(app, formation)
    if not changes:
        sizes = client.list_sizes().sizes
        click.echo("")
        heading("Sizes")
        table(
            ["SIZE", "MEMORY", "MAX PROCESSES"],
            [[s.name, f"{s.memory_mb} MB", s.max_processes] for s in sizes],
        )
