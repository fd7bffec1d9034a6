"""kill -9 of a builder mid-compile: another builder process finishes the job.

Two real `python -m builder` processes against a real nats-server. The first
takes the job and is killed while the slow buildpack compiles; the job comes
back after ack_wait (3 s here) and the second builder completes it as attempt 2.
Exactly one `succeeded` status is published for the build.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import buildproto as protocol
from slipway import objstore, oci, pki
from tests.harness import secure
from tests.harness.wait import eventually_async
from tests.integration.test_builder_builds import FIXTURES, Client, Watch

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def failover_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = secure.nats_engine(tmp_path_factory.mktemp("failover-nats"))
    server.start()
    yield f"nats://{server.host}:{server.port}"
    server.stop()


class BuilderProcess:
    def __init__(self, name: str, nats_url: str, data_dir: Path, ack_wait: float = 3) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log = data_dir.with_suffix(".log")
        argv = [
            sys.executable,
            "-m",
            "builder",
            "--nats",
            nats_url,
            "--data-dir",
            str(data_dir),
            "--name",
            name,
            "--ack-wait",
            str(ack_wait),
            "--build-timeout",
            "120",
            *secure.flags(pki.Role.BUILDER),
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The killed builder's runc child and container outlive it; remove them.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        runc = oci.Runc(self.data_dir / "sandbox" / "runc")
        for state in await runc.list():
            await runc.kill(state.id, signal.SIGKILL, missing_ok=True)
            await runc.delete(state.id, force=True, missing_ok=True)


async def test_killed_builder_job_completes_elsewhere_once(
    failover_nats_url: str, tmp_path: Path
) -> None:
    nc = await secure.nats_connect([failover_nats_url], name="failover-test")
    stores = objstore.ObjectStores(nc.jetstream())
    await stores.ensure_buckets()
    client = Client(nc, stores, tmp_path)
    first = BuilderProcess("builder-a", failover_nats_url, tmp_path / "a")
    second: BuilderProcess | None = None
    try:
        source = await client.upload_dir(FIXTURES / "hello-app")
        build_id = f"b-{uuid.uuid4().hex[:12]}"
        w = await client.watch(build_id)
        job = protocol.BuildJob(
            build_id, "slow-app", source, [str(FIXTURES / "slow-buildpack")], {}
        )
        await protocol.submit(client.js, job)

        async def compiling_on_a() -> bool:
            return any(line.attempt == 1 and "step 2" in line.line for line in w.lines)

        await eventually_async(compiling_on_a, timeout=60, interval=0.1)
        first.kill9()

        second = BuilderProcess("builder-b", failover_nats_url, tmp_path / "b")

        async def finished() -> bool:
            return w.final is not None

        await eventually_async(finished, timeout=90, interval=0.1)
        final = w.final
        assert final is not None and final.status == protocol.SUCCEEDED, w.text
        assert final.builder == "builder-b"
        assert final.attempt == 2
        assert final.process_types == {"web": "cat slow-marker.txt", "worker": "./bin/hello --loop"}
        assert any(
            line.attempt == 2 and "Build restarted on builder-b (attempt 2 of 3)" in line.line
            for line in w.lines
        )

        # The job is settled (acked) and nothing else is on its way.
        async def settled() -> bool:
            info = await client.js.consumer_info(protocol.STREAM, protocol.CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually_async(settled, timeout=15, interval=0.2)
        await nc.flush()
        succeeded = [s for s in w.statuses if s.status == protocol.SUCCEEDED]
        assert len(succeeded) == 1, w.statuses
        running = [(s.builder, s.attempt) for s in w.statuses if s.status == protocol.RUNNING]
        assert running == [("builder-a", 1), ("builder-b", 2)]
    finally:
        await first.cleanup()
        if second is not None:
            await second.cleanup()
        await nc.close()
        await asyncio.sleep(0)


async def start_slow_build(client: Client) -> tuple[str, object]:
    source = await client.upload_dir(FIXTURES / "hello-app")
    build_id = f"b-{uuid.uuid4().hex[:12]}"
    w = await client.watch(build_id)
    job = protocol.BuildJob(build_id, "slow-app", source, [str(FIXTURES / "slow-buildpack")], {})
    await protocol.submit(client.js, job)
    return build_id, w


async def test_sigterm_drains_then_second_sigterm_hands_back(
    failover_nats_url: str, tmp_path: Path
) -> None:
    nc = await secure.nats_connect([failover_nats_url], name="drain-test")
    stores = objstore.ObjectStores(nc.jetstream())
    client = Client(nc, stores, tmp_path)
    # ack_wait far longer than the test: only a nak can move the job quickly.
    a = BuilderProcess("drainer", failover_nats_url, tmp_path / "a", ack_wait=300)
    b: BuilderProcess | None = None
    try:
        # One SIGTERM: the build in hand finishes on this builder, which then exits.
        _, w1 = await start_slow_build(client)
        assert isinstance(w1, Watch)

        async def compiling(w: Watch = w1) -> bool:
            return any("step 1" in line.line for line in w.lines)

        await eventually_async(compiling, timeout=60, interval=0.1)
        a.proc.send_signal(signal.SIGTERM)

        async def done1() -> bool:
            return w1.final is not None

        await eventually_async(done1, timeout=60, interval=0.1)
        assert w1.final is not None and w1.final.status == protocol.SUCCEEDED
        assert (w1.final.builder, w1.final.attempt) == ("drainer", 1)
        assert await asyncio.to_thread(a.proc.wait, 30) == 0

        # Two SIGTERMs: the build is handed back and another builder runs it.
        a2 = BuilderProcess("impatient", failover_nats_url, tmp_path / "a2", ack_wait=300)
        await a.cleanup()
        a = a2
        _, w2 = await start_slow_build(client)
        assert isinstance(w2, Watch)

        async def compiling2(w: Watch = w2) -> bool:
            return any("step 1" in line.line for line in w.lines)

        await eventually_async(compiling2, timeout=60, interval=0.1)
        a.proc.send_signal(signal.SIGTERM)

        # Two signals sent at once may reach the process as one (not queued).
        async def draining(log: Path = a.log) -> bool:
            return '"draining"' in log.read_text()

        await eventually_async(draining, timeout=10, interval=0.05)
        a.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.proc.wait, 30) == 0
        assert "build handed back" in a.log.read_text()
        b = BuilderProcess("taker", failover_nats_url, tmp_path / "b", ack_wait=300)

        async def done2() -> bool:
            return w2.final is not None

        await eventually_async(done2, timeout=60, interval=0.1)
        assert w2.final is not None and w2.final.status == protocol.SUCCEEDED, w2.text
        assert (w2.final.builder, w2.final.attempt) == ("taker", 2)
    finally:
        await a.cleanup()
        if b is not None:
            await b.cleanup()
        await nc.close()
