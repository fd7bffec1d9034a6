"""logs: an app's recent log lines, optionally followed live (Heroku's `heroku logs`)."""

from __future__ import annotations

import os
import sys

import click

from slipway.cli.base import app_option, cli, with_client
from slipway.client import Client
from slipway.logline import MAX_LINES_PER_APP, SOURCES, LogLine
from slipway.v1 import platform_pb2 as pb


def render(entry: pb.LogEntry) -> str:
    ts = entry.at.seconds + entry.at.nanos / 1e9
    return LogLine("", entry.source, entry.process, entry.message, ts).render()


def note_resume(address: str, reason: str) -> None:
    """A tail whose controller went away carries on elsewhere; say so on stderr only
    (stdout carries log lines and nothing else)."""
    click.echo(f"Log stream from {address} broke ({reason}); reconnecting.", err=True)


def capped(num: int) -> int:
    """``-n`` above the kept history is shown as the whole history, with a note."""
    if num > MAX_LINES_PER_APP:
        click.echo(
            f"Showing at most {MAX_LINES_PER_APP} lines: that is all the history kept per app.",
            err=True,
        )
        return MAX_LINES_PER_APP
    return num


@cli.command("logs")
@app_option
@click.option(
    "-n",
    "--num",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help=f"Number of recent lines to show (at most {MAX_LINES_PER_APP}).",
)
@click.option("-t", "--tail", is_flag=True, help="Keep following new lines until Ctrl-C.")
@click.option("-s", "--source", type=click.Choice(SOURCES), help="Only lines of this source.")
@click.option(
    "-d",
    "--dyno",
    metavar="DYNO",
    help="Only this dyno (web.1) or process type (web); `router` for router lines.",
)
@with_client
def logs(
    client: Client, app: str, num: int, tail: bool, source: str | None, dyno: str | None
) -> None:
    """Show an app's recent log lines; --tail follows new ones.

    Lines read `TIMESTAMP SOURCE[PROCESS]: message`, with sources app (dyno
    output), heroku (router and dyno manager) and api (releases, config, scaling).
    """
    lines = client.stream_logs(
        app,
        num=capped(num),
        tail=tail,
        source=source or "",
        dyno=dyno or "",
        on_resume=note_resume,
    )
    try:
        for entry in lines:
            # click.echo flushes, so a tail piped into another program stays live.
            click.echo(render(entry))
    except KeyboardInterrupt:
        lines.close()  # cancels the stream; Ctrl-C is how a tail ends, not an error
    except BrokenPipeError:
        lines.close()
        # `slipway logs | head`: the reader left; exit quietly, without Python's
        # "Exception ignored" note when stdout is flushed at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
