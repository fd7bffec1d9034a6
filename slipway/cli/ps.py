"""ps, ps:scale, ps:type, ps:restart, ps:stop."""

from __future__ import annotations

import re

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import age, emit_json, heading, table
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
@click.argument("changes", nargs=-1, metavar="[TYPE=N[:SIZE]]...")
@app_option
@json_option
@with_client
def ps_scale(client: Client, changes: tuple[str, ...], app: str, as_json: bool) -> None:
    """Scale process types: web=3, worker+1, web=2:standard-2x; with none, show the formation."""
    if not changes:
        current = list(client.get_formation(app).formation)
        if as_json:
            emit_json(current)
        else:
            _print_formation(app, current)
        return
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


def _memory(used: int, limit: int) -> str:
    if not used:
        return "-"
    pct = f" ({100 * used // limit}%)" if limit else ""
    return f"{used / 1024 / 1024:.0f} MB{pct}"


@cli.command("ps")
@app_option
@json_option
@with_client
def ps_list(client: Client, app: str, as_json: bool) -> None:
    """List the app's dynos: state, age, node, release, restarts."""
    dynos = list(client.list_dynos(app).dynos)
    if as_json:
        emit_json(dynos)
        return
    if not dynos:
        click.echo(f"No dynos on {app}. Scale up with `slipway ps:scale -a {app} web=1`.")
        return
    by_type: dict[str, list[pb.Dyno]] = {}
    for d in dynos:
        by_type.setdefault(d.type, []).append(d)
    for ptype, group in by_type.items():
        heading(f"{ptype} ({group[0].size}): {group[0].command or '-'} ({len(group)})")
        table(
            ["DYNO", "STATE", "AGE", "NODE", "RELEASE", "RESTARTS", "MEMORY"],
            [
                [
                    d.name,
                    d.state,
                    age(d.state_changed_at if d.state_changed_at.seconds else d.created_at),
                    d.node,
                    f"v{d.release}",
                    d.restarts,
                    _memory(d.memory_bytes, d.memory_limit_bytes),
                ]
                for d in group
            ],
        )
        click.echo("")


@cli.command("ps:restart")
@click.argument("target", required=False, default="", metavar="[TYPE|DYNO]")
@app_option
@with_client
def ps_restart(client: Client, target: str, app: str) -> None:
    """Restart all dynos, one process type (web) or one dyno (web.1)."""
    restarted = list(client.restart_dynos(app, target).restarted)
    what = target or "all dynos"
    click.echo(f"Restarting {what} on {app}... done ({', '.join(restarted) or 'nothing running'})")


@cli.command("ps:stop")
@click.argument("dyno", metavar="DYNO")
@app_option
@with_client
def ps_stop(client: Client, dyno: str, app: str) -> None:
    """Stop one dyno (web.1 or run.2). Formation dynos come back as fresh copies."""
    stopped = list(client.stop_dyno(app, dyno).stopped)
    click.echo(f"Stopping {', '.join(stopped)} on {app}... done")
    if not dyno.startswith("run."):
        ptype = dyno.split(".")[0]
        click.echo(
            f"The formation starts a fresh {ptype} dyno; scale {ptype} down to keep it stopped."
        )
