"""deploy, builds, builds:info, builds:output, buildpacks*, builds:cache:purge."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from slipway import archive
from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb

_STATUS = {
    pb.BUILD_STATUS_PENDING: "pending",
    pb.BUILD_STATUS_RUNNING: "running",
    pb.BUILD_STATUS_SUCCEEDED: "succeeded",
    pb.BUILD_STATUS_FAILED: "failed",
}


def status_text(build: pb.Build) -> str:
    text = _STATUS.get(build.status, "unknown")
    if build.status == pb.BUILD_STATUS_SUCCEEDED and build.release_phase in ("pending", "running"):
        return "releasing"
    if build.release_phase == "failed":
        return "release failed"
    return text


def build_failed(build: pb.Build) -> bool:
    return build.status != pb.BUILD_STATUS_SUCCEEDED or build.release_phase == "failed"


def git_short_commit(directory: Path) -> str:
    """The checkout's short HEAD commit, or "" when it is not a git checkout."""
    if not archive.is_git_checkout(directory):
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def follow_output(client: Client, app: str, build_id: str) -> pb.Build | None:
    """Print a build's lines as they come; return the finished build."""
    final: pb.Build | None = None
    for event in client.stream_build_output(app, build_id):
        if event.WhichOneof("event") == "line":
            click.echo(event.line.line)
        else:
            final = event.build
    return final


class _Progress:
    """One updating line on a terminal; a single summary line otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, sent: int, total: int) -> None:
        pct = 100 if not total else sent * 100 // total
        if self.tty and pct != self.last:
            click.echo(f"\r-----> Uploading source... {pct}%", nl=False, err=True)
        self.last = pct

    def done(self, seconds: float) -> None:
        size = archive.human_size(self.total)
        prefix = "\r" if self.tty else ""
        click.echo(f"{prefix}-----> Uploading source... done, {size} in {seconds:.1f}s", err=True)


@cli.command("deploy")
@click.argument(
    "directory",
    required=False,
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@app_option
@with_client
def deploy(client: Client, directory: Path, app: str) -> None:
    """Build DIRECTORY (default: .) with buildpacks and release it.

    A git checkout ships its committed HEAD tree; any other directory ships as it is.
    """
    source_version = git_short_commit(directory)
    with tempfile.TemporaryDirectory(prefix="slipway-deploy-") as tmp:
        click.echo(f"-----> Packing {directory.resolve()}", err=True)
        packed = asyncio.run(archive.pack_source(directory, Path(tmp) / "source.tgz"))
        progress = _Progress(packed.size)
        started = time.monotonic()
        build = client.upload_source(
            app,
            packed.path,
            sha256=packed.digest,
            source_version=source_version,
            progress=progress,
        ).build
        progress.done(time.monotonic() - started)
    click.echo(f"-----> Build {build.id} queued", err=True)
    final = follow_output(client, app, build.id)
    if final is None:
        raise click.ClickException(f"lost the build output; see `slipway builds:info {build.id}`")
    if build_failed(final):
        raise click.ClickException(final.error or f"build {final.id} failed")
    click.echo(f"-----> Released v{final.release}")


@cli.command("builds")
@app_option
@click.option("-n", "--num", default=15, show_default=True, help="How many (0: all).")
@json_option
@with_client
def builds_list(client: Client, app: str, num: int, as_json: bool) -> None:
    """List builds, newest first."""
    builds = list(client.list_builds(app, num).builds)
    if as_json:
        emit_json(builds)
        return
    if not builds:
        click.echo(f"{app} has no builds yet.")
        return
    heading(f"{app} Builds")
    table(
        ["ID", "STATUS", "VERSION", "RELEASE", "ATTEMPTS", "CREATED"],
        [
            [
                b.id,
                status_text(b),
                b.source_version,
                f"v{b.release}" if b.release else "-",
                b.attempts,
                when(b.created_at),
            ]
            for b in builds
        ],
    )


@cli.command("builds:info")
@click.argument("build_id", required=False, default="")
@app_option
@json_option
@with_client
def builds_info(client: Client, build_id: str, app: str, as_json: bool) -> None:
    """Show one build (the latest by default)."""
    b = client.get_build(app, build_id).build
    if as_json:
        emit_json(b)
        return
    heading(f"Build {b.id}")
    rows = [
        ("Status", status_text(b)),
        ("Source", f"{b.source_version} ({b.source_digest[:12]}, {b.source_size_bytes} bytes)"),
        ("Buildpacks", ", ".join(b.buildpacks) or "auto-detect"),
        ("Attempts", str(b.attempts)),
        ("Builder", b.builder or "-"),
        ("Created", when(b.created_at)),
        ("Started", when(b.started_at)),
        ("Finished", when(b.finished_at)),
        ("Slug", f"{b.slug_digest} ({b.slug_size_bytes} bytes)" if b.slug_digest else "-"),
        ("Release", f"v{b.release}" if b.release else "-"),
        ("Release phase", b.release_phase or "-"),
        ("Error", b.error or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")


@cli.command("builds:output")
@click.argument("build_id", required=False, default="")
@app_option
@with_client
def builds_output(client: Client, build_id: str, app: str) -> None:
    """Replay a build's output (the latest build by default); follows one still running."""
    final = follow_output(client, app, build_id)
    if final is not None and build_failed(final):
        click.echo(f" !     {final.error or 'build failed'}", err=True)


@cli.command("builds:cache:purge")
@app_option
@click.option("--confirm", required=True, metavar="APP", help="Repeat the app name.")
@with_client
def builds_cache_purge(client: Client, app: str, confirm: str) -> None:
    """Delete the app's build cache; the next build starts from scratch."""
    purged = client.purge_build_cache(app, confirm).purged
    click.echo(f"Purging build cache of {app}... " + ("done" if purged else "done (was empty)"))


# -- buildpacks


def _show_buildpacks(app: str, packs: list[str], as_json: bool) -> None:
    if as_json:
        emit_json(packs)
        return
    if not packs:
        click.echo(f"{app} has no buildpacks set; they are detected at build time.")
        return
    heading(f"{app} Buildpack{'s' if len(packs) > 1 else ''}")
    for n, pack in enumerate(packs, 1):
        click.echo(f"{n}. {pack}" if len(packs) > 1 else pack)


@cli.command("buildpacks")
@app_option
@json_option
@with_client
def buildpacks_list(client: Client, app: str, as_json: bool) -> None:
    """List the app's buildpacks."""
    packs = list(client.set_buildpacks(app, pb.BUILDPACKS_ACTION_UNSPECIFIED).buildpacks)
    _show_buildpacks(app, packs, as_json)


_index_option = click.option(
    "-i", "--index", default=0, type=click.IntRange(min=0), help="1-based position."
)


@cli.command("buildpacks:set")
@click.argument("buildpack")
@app_option
@_index_option
@with_client
def buildpacks_set(client: Client, buildpack: str, app: str, index: int) -> None:
    """Use BUILDPACK (a name, path or URL) instead of the current ones (or at --index)."""
    packs = list(
        client.set_buildpacks(app, pb.BUILDPACKS_ACTION_SET, [buildpack], index).buildpacks
    )
    click.echo(f"Buildpack set. Next release on {app} will use {', '.join(packs)}.")


@cli.command("buildpacks:add")
@click.argument("buildpack")
@app_option
@_index_option
@with_client
def buildpacks_add(client: Client, buildpack: str, app: str, index: int) -> None:
    """Add BUILDPACK at the end (or at --index)."""
    packs = list(
        client.set_buildpacks(app, pb.BUILDPACKS_ACTION_ADD, [buildpack], index).buildpacks
    )
    click.echo(f"Buildpack added. Next release on {app} will use:")
    for n, pack in enumerate(packs, 1):
        click.echo(f"  {n}. {pack}")


@cli.command("buildpacks:remove")
@click.argument("buildpack")
@app_option
@with_client
def buildpacks_remove(client: Client, buildpack: str, app: str) -> None:
    """Remove BUILDPACK from the app's list."""
    packs = list(client.set_buildpacks(app, pb.BUILDPACKS_ACTION_REMOVE, [buildpack]).buildpacks)
    click.echo(f"Buildpack removed. {app} now uses: {', '.join(packs) or 'auto-detection'}.")


@cli.command("buildpacks:clear")
@app_option
@with_client
def buildpacks_clear(client: Client, app: str) -> None:
    """Remove every buildpack: the next build detects them again."""
    client.set_buildpacks(app, pb.BUILDPACKS_ACTION_CLEAR)
    click.echo(f"Buildpacks cleared. Next release on {app} will detect buildpacks normally.")


@cli.command("stack")
@app_option
@json_option
@with_client
def stack_show(client: Client, app: str, as_json: bool) -> None:
    """Show the stack the app builds and runs on, and the running release's."""
    info = client.get_app(app)
    running = info.release.slug.stack if info.release.slug.digest else ""
    if as_json:
        emit_json({"stack": info.app.stack, "running": running})
        return
    heading(f"{app} Stack")
    click.echo(f"* {info.app.stack}")
    if running and running != info.app.stack:
        click.echo(f"  (the running release was built on {running}; deploy to move it)")


@cli.command("stack:set")
@click.argument("stack")
@app_option
@with_client
def stack_set(client: Client, stack: str, app: str) -> None:
    """Build the app on STACK from the next deploy on (needs deploy)."""
    reply = client.set_stack(app, stack)
    click.echo(f"Setting stack to {reply.app.stack}... done")
    click.echo("You will need to redeploy for the change to take effect: slipway deploy")
