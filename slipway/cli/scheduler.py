"""scheduler:jobs, scheduler:create, scheduler:remove."""

from __future__ import annotations

import click

from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.cli.run import command_line
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb

_CREATE_HELP = """Run COMMAND on a schedule, each time in a one-off dyno scheduler.N.

\b
  slipway scheduler:create -a myapp --every 10m -- python3 manage.py clearsessions
  slipway scheduler:create -a myapp --every 1h --at :30 -- bin/refresh-feeds
  slipway scheduler:create -a myapp --every 1d --at 02:30 -- bin/nightly-report

--every is 10m (at :00, :10, :20, ...), 1h (at the minute --at :MM, default
:00) or 1d (at the UTC time --at HH:MM, default 00:00). The first run is at the
next of those times. Each run uses the app's current release and config; its
output is in the app's log (`slipway logs -a APP --dyno scheduler`). A run is
stopped once it has lasted its job's interval (10 minutes, an hour, a day).
Slots missed while no controller was up are not run afterwards.
"""


def _last(job: pb.SchedulerJob) -> str:
    if not job.recent_runs:
        return "never"
    run = job.recent_runs[-1]
    return f"{when(run.started_at)} ({run.dyno})"


@cli.command("scheduler:jobs")
@app_option
@json_option
@with_client
def scheduler_jobs(client: Client, app: str, as_json: bool) -> None:
    """List the app's scheduler jobs, with their next and last runs."""
    jobs = list(client.list_scheduler_jobs(app).jobs)
    if as_json:
        emit_json(jobs)
        return
    if not jobs:
        click.echo(
            f"{app} has no scheduler jobs. Add one with:"
            f" slipway scheduler:create -a {app} --every 10m -- COMMAND"
        )
        return
    heading(f"{app} Scheduler Jobs")
    table(
        ["ID", "SCHEDULE", "SIZE", "NEXT RUN", "LAST RUN", "COMMAND"],
        [[j.id, j.schedule, j.size, when(j.next_run_at), _last(j), j.command] for j in jobs],
    )


@cli.command(
    "scheduler:create",
    help=_CREATE_HELP,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@app_option
@click.option("--every", required=True, metavar="10m|1h|1d", help="How often the job runs.")
@click.option("--at", "at", default="", metavar=":MM|HH:MM", help="When in the hour or day.")
@click.option("-s", "--size", default="", metavar="SIZE", help="Dyno size (default standard-1x).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@json_option
@with_client
def scheduler_create(
    client: Client,
    app: str,
    every: str,
    at: str,
    size: str,
    command: tuple[str, ...],
    as_json: bool,
) -> None:
    job = client.create_scheduler_job(app, every, command_line(command), at=at, size=size).job
    if as_json:
        emit_json(job)
        return
    click.echo(f"Created scheduler job {job.id} on {app}: `{job.command}` {job.schedule}")
    click.echo(f"First run: {when(job.next_run_at)}")


@cli.command("scheduler:remove")
@click.argument("job", metavar="JOB_ID")
@app_option
@with_client
def scheduler_remove(client: Client, job: str, app: str) -> None:
    """Remove a scheduler job (named by its id, as scheduler:jobs shows it).

    A run already going goes on to its end.
    """
    removed = client.remove_scheduler_job(app, job).job
    click.echo(f"Removed scheduler job {removed.id} (`{removed.command}` {removed.schedule})")
