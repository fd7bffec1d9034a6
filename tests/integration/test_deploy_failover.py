"""kill -9 of the builder mid-compile during `slipway deploy`: exactly one release.

Two real builder processes on this module's own nats-server (ack_wait 3 s); the
real CLI deploys an app with the slow test buildpack; the builder that took the
job (the build record says which) is killed with SIGKILL while compiling. The
job comes back to the other builder, the CLI's live output carries on, the
build record shows two attempts, and exactly one release is created.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import archive, buildproto
from slipway.v1 import platform_pb2 as pb
from tests.harness import secure
from tests.harness.controller import BIN
from tests.harness.wait import eventually
from tests.integration.test_builder_failover import BuilderProcess
from tests.integration.test_deploy_builds import FIXTURES, show, start_controller

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def failover_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = secure.nats_engine(tmp_path_factory.mktemp("deploy-failover-nats"))
    server.start()
    yield f"nats://{server.host}:{server.port}"
    server.stop()


def test_builder_killed_mid_compile_one_release(
    etcd_endpoint: str, etcd_prefix: str, failover_nats: str, tmp_path: Path
) -> None:
    ctl = start_controller(etcd_endpoint, etcd_prefix, failover_nats, tmp_path / "controller")
    builders = {
        name: BuilderProcess(name, failover_nats, tmp_path / name)
        for name in ("builder-a", "builder-b")
    }
    deploy: subprocess.Popen[str] | None = None
    try:
        ctl.cli("apps:create", "slowapp", check=True)
        ctl.cli("buildpacks:set", str(FIXTURES / "slow-buildpack"), "-a", "slowapp", check=True)
        env = ctl.env() | {"SLIPWAY_API": ctl.address, "SLIPWAY_TOKEN": ctl.token}
        deploy = subprocess.Popen(
            [str(BIN / "slipway"), "deploy", str(FIXTURES / "hello-app"), "-a", "slowapp"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = ctl.client()

        def compiling() -> pb.Build | None:
            builds = list(client.list_builds("slowapp").builds)
            if builds and builds[0].status == pb.BUILD_STATUS_RUNNING and builds[0].builder:
                return builds[0]
            return None

        found = eventually(compiling, timeout=60, interval=0.2)
        assert found is not None
        build = found
        holder = builders[build.builder]
        holder.kill9()

        out, err = deploy.communicate(timeout=120)
        show("deploy across a builder crash", subprocess.CompletedProcess([], 0, out, err))
        assert deploy.returncode == 0, out + err
        assert "Released v2" in out
        assert "attempt 2" in out  # the retried build announced itself in the live output

        final = client.get_build("slowapp", build.id).build
        assert final.status == pb.BUILD_STATUS_SUCCEEDED
        assert final.attempts == 2
        assert final.builder != build.builder
        releases = list(client.list_releases("slowapp").releases)
        assert [r.version for r in releases] == [2, 1]
        assert releases[0].slug.digest == final.slug_digest
        info = ctl.cli("builds:info", build.id, "-a", "slowapp", check=True)
        assert "Attempts:" in info.stdout and "2" in info.stdout
    finally:
        if deploy is not None and deploy.poll() is None:
            deploy.kill()
            deploy.wait()
        for b in builders.values():
            asyncio.run(b.cleanup())
        ctl.stop()


def test_controller_restart_mid_build_still_releases_once(
    etcd_endpoint: str, etcd_prefix: str, failover_nats: str, tmp_path: Path
) -> None:
    """Statuses published while no controller runs are applied by the next one."""
    ctl = start_controller(etcd_endpoint, etcd_prefix, failover_nats, tmp_path / "controller")
    b = BuilderProcess("builder-c", failover_nats, tmp_path / "builder-c")
    try:
        ctl.cli("apps:create", "restartapp", check=True)
        ctl.cli("buildpacks:set", str(FIXTURES / "slow-buildpack"), "-a", "restartapp", check=True)
        client = ctl.client()
        packed = asyncio.run(archive.pack_source(FIXTURES / "hello-app", tmp_path / "source.tgz"))
        build = client.upload_source("restartapp", packed.path, sha256=packed.digest).build

        def running() -> bool:
            return client.get_build("restartapp", build.id).build.status == pb.BUILD_STATUS_RUNNING

        eventually(running, timeout=60, interval=0.2)
        ctl.stop()

        async def last_status() -> str:
            nc = await secure.nats_connect([failover_nats])
            try:
                msg = await nc.jetstream().get_last_msg(
                    buildproto.EVENTS_STREAM, buildproto.status_subject(build.id)
                )
                return buildproto.BuildStatus.decode(msg.data or b"").status
            finally:
                await nc.close()

        # The build finishes while no controller runs: its status waits in the stream.
        eventually(lambda: asyncio.run(last_status()) == buildproto.SUCCEEDED, timeout=60)
        ctl.start()
        client = ctl.client()

        def released() -> pb.Build | None:
            got = client.get_build("restartapp", build.id).build
            return got if got.release else None

        final = eventually(released, timeout=60, interval=0.3)
        assert final is not None and final.release == 2
        assert [r.version for r in client.list_releases("restartapp").releases] == [2, 1]
        replay = ctl.cli("builds:output", build.id, "-a", "restartapp", check=True)
        assert "step 6" in replay.stdout and "Build succeeded" in replay.stdout
    finally:
        asyncio.run(b.cleanup())
        ctl.stop()
