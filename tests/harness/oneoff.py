"""Helpers for one-off dyno tests: a cluster with extra controller settings, a
deployed app, and the real `slipway` CLI run as a subprocess (pipes or a pty)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from slipway.v1 import types_pb2
from tests.harness import secure
from tests.harness.cluster import LocalCluster, controller_config
from tests.harness.controller import BIN, ControllerProcess
from tests.harness.slugs import upload_slug


def start_cluster(
    workdir: Path, etcd_endpoint: str, prefix: str, nats_url: str, extra_config: str = ""
) -> LocalCluster:
    workdir.mkdir(parents=True, exist_ok=True)
    # The router's and the nodes' etcd roles must cover this prefix, as the
    # etcd_prefix fixture's do (auth is on once any test has sealed the etcd).
    secure.seal([etcd_endpoint], prefix)
    config = controller_config(workdir / "controller.toml")
    config.write_text(config.read_text() + extra_config)
    proc = ControllerProcess(
        etcd_endpoint,
        prefix,
        workdir / "controller",
        nats_url,
        extra_args=["--config", str(config)],
    )
    proc.start()
    return LocalCluster(proc, workdir)


def deploy(cluster: LocalCluster, app: str) -> int:
    """Create ``app`` with a release of the test slug (no formation dynos)."""
    cluster.controller.cli("apps:create", app, check=True)
    slug = asyncio.run(upload_slug(cluster.controller.nats_url))
    with cluster.client() as client:
        client.update_config(app, {"GREETING": "hello-oneoff"})
        release = client.create_release(
            app,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
            {"worker": slug.process_types["worker"]},
        ).release
    return int(release.version)


def cli_env(cluster: LocalCluster) -> dict[str, str]:
    env = cluster.controller.env()
    env["SLIPWAY_API"] = cluster.controller.address
    env["SLIPWAY_TOKEN"] = cluster.controller.token
    return env


def slipway_argv(*args: str) -> list[str]:
    return [str(BIN / "slipway"), *args]


def run_cli(
    cluster: LocalCluster, *args: str, stdin: bytes = b"", timeout: float = 90
) -> subprocess.CompletedProcess[bytes]:
    """`slipway ARGS` with pipes (no terminal), stdin fed and closed."""
    return subprocess.run(
        slipway_argv(*args),
        env=cli_env(cluster),
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def dynos(cluster: LocalCluster, app: str) -> list[dict[str, Any]]:
    out = cluster.controller.cli("ps", "-a", app, "--json", check=True).stdout
    return list(json.loads(out))


def runs(cluster: LocalCluster, app: str) -> list[dict[str, Any]]:
    return [d for d in dynos(cluster, app) if str(d["name"]).startswith("run.")]


def popen_cli(cluster: LocalCluster, *args: str) -> subprocess.Popen[bytes]:
    """`slipway ARGS` in the background, stdin an open pipe (a client that stays)."""
    return subprocess.Popen(
        slipway_argv(*args),
        env=cli_env(cluster),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
