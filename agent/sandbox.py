"""From a DynoSpec to a runc bundle: paths, environment, command, filesystem.

Per-dyno directory (DATA/dynos/{key}/):

    record.json   the agent's record of the dyno (see records.py)
    bundle/       config.json for runc
    upper/ work/  overlay layers over the cached slug: the dyno's writable /app
    app/          used instead of the overlay when overlayfs is unavailable (a copy)
    out.log       the container's stdout+stderr (appended by the container itself)
    out.offset    how far the agent has published out.log
    pid           written by runc once the process runs
    shim.pid      the shim supervising `runc run`
    status.json   written by the shim when the container exits
    attach.sock   attached one-offs only: the shim's socket for the dyno's stdio
    hangup        attached one-offs only: the agent is stopping it (no client will come)

The process runs ``bash -c`` that sources ``/app/.profile.d/*.sh`` and then
runs the release command as a child instead of exec'ing it: the pid-1 of a pid
namespace ignores SIGTERM unless it installs a handler, so an app that is pid 1
would never see Heroku's SIGTERM. bash stays as a small init, the app gets the
signal, and bash exits with the app's status.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from agent.model import DynoSpec
from slipway.oci import ContainerSpec, Stack, app_overlay, build_config, rw_bind, write_bundle

LAUNCH_SCRIPT = (
    "cd /app || exit 1\n"
    'for f in /app/.profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done\n'
    "unset f\n"
    'eval "$1"\n'
    "exit $?\n"
)
SHELL = "/bin/bash"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def container_id(prefix: str, spec: DynoSpec) -> str:
    """runc id, unique per placement and readable in `runc list`.

    The instance id is hashed: its format belongs to the controller, and a
    truncated prefix could collide.
    """
    short = hashlib.sha256(spec.instance_id.encode()).hexdigest()[:12]
    return f"{prefix}.{_SAFE.sub('-', spec.app)}.{_SAFE.sub('-', spec.name)}.{short}"


def cgroups_path(prefix: str, cid: str) -> str:
    # One shared parent: the container id already carries the agent's prefix,
    # and a parent per prefix would be left behind as an empty cgroup.
    del prefix
    return f"/slipway/{cid}"


def dyno_env(spec: DynoSpec, *, port: int, path: str) -> dict[str, str]:
    """Config vars plus what the platform sets; the platform's names win."""
    env = {
        "HOME": "/app",
        "PATH": path,
        "LANG": "C.UTF-8",
        "PS1": r"\[\033[01;34m\]\w\[\033[00m\] \[\033[01;32m\]$ \[\033[00m\]",
    }
    env.update(spec.env)
    env["DYNO"] = spec.name
    env["HOME"] = "/app"
    if spec.tty:
        # Readline, less and friends need a terminal type; a config var may pick another.
        env.setdefault("TERM", "xterm-256color")
    if spec.is_web and port:
        env["PORT"] = str(port)
    else:
        env.pop("PORT", None)
    return env


def launch_args(command: str) -> tuple[str, ...]:
    return (SHELL, "-c", LAUNCH_SCRIPT, "dyno", command)


def memory_limit_bytes(memory_mb: int, hard_factor: float) -> int:
    """The cgroup limit: the quota times the R15 factor (Heroku kills at 2x)."""
    return int(memory_mb * 1024 * 1024 * hard_factor)


@dataclass(frozen=True)
class DynoPaths:
    root: Path

    @property
    def record(self) -> Path:
        return self.root / "record.json"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def app_copy(self) -> Path:
        return self.root / "app"

    @property
    def log(self) -> Path:
        return self.root / "out.log"

    @property
    def offset(self) -> Path:
        return self.root / "out.offset"

    @property
    def pid(self) -> Path:
        return self.root / "pid"

    @property
    def shim_pid(self) -> Path:
        return self.root / "shim.pid"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def attach_sock(self) -> Path:
        return self.root / "attach.sock"

    @property
    def hangup(self) -> Path:
        return self.root / "hangup"

    @property
    def runc_log(self) -> Path:
        return self.root / "runc.log"


def reset_run_files(paths: DynoPaths) -> None:
    """Forget the previous run: a fresh writable layer (ephemeral filesystem)."""
    for p in (paths.pid, paths.shim_pid, paths.status, paths.attach_sock, paths.hangup):
        p.unlink(missing_ok=True)
    for d in (paths.upper, paths.work, paths.app_copy):
        if d.exists():
            shutil.rmtree(d)


def prepare_app_dir(
    paths: DynoPaths, slug_dir: Path, *, use_overlay: bool, uid: int, gid: int
) -> None:
    """Create the per-run writable layer: overlay dirs, or a full copy."""
    if use_overlay:
        paths.upper.mkdir(parents=True)
        paths.work.mkdir(parents=True)
        if os.geteuid() == 0:
            # The overlay root takes the upper dir's owner: /app belongs to the dyno.
            os.chown(paths.upper, uid, gid)
    else:
        shutil.copytree(slug_dir, paths.app_copy, symlinks=True)
        if os.geteuid() == 0:
            os.chown(paths.app_copy, uid, gid)


def write_dyno_bundle(
    *,
    netns: str | None = None,
    spec: DynoSpec,
    stack: Stack,
    paths: DynoPaths,
    slug_dir: Path,
    cid: str,
    prefix: str,
    port: int,
    use_overlay: bool,
    hard_factor: float,
) -> None:
    app_mount = (
        app_overlay(slug_dir, paths.upper, paths.work)
        if use_overlay
        else rw_bind(paths.app_copy, "/app")
    )
    cspec = ContainerSpec(
        hostname=spec.name,
        args=launch_args(spec.command),
        env=dyno_env(spec, port=port, path=stack.path()),
        cgroups_path=cgroups_path(prefix, cid),
        mounts=(app_mount,),
        memory_limit_bytes=memory_limit_bytes(spec.memory_mb, hard_factor),
        pids_limit=spec.max_processes or None,
        cpu_shares=spec.cpu_shares or None,
        annotations={
            "slipway.app": spec.app,
            "slipway.dyno": spec.name,
            "slipway.instance": spec.instance_id,
            "slipway.release": str(spec.release),
        },
    )
    config = build_config(cspec, stack)
    # An attached dyno with a terminal: runc makes the container's own pty its
    # stdio and controlling terminal (the shim feeds runc a host pty).
    config["process"]["terminal"] = spec.tty
    if netns:
        # The network namespace the agent prepared with CNI (agent/network.py).
        config["linux"]["namespaces"].append({"type": "network", "path": netns})
    write_bundle(paths.bundle, config)
