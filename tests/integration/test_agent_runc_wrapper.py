"""slipway.oci.Runc against real runc: the calls the builder and agent rely on."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from slipway import errors
from slipway.oci import ContainerSpec, HostStack, Runc, build_config, rw_bind, write_bundle
from tests.harness.wait import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def bundle(tmp_path: Path, stack: HostStack, cid: str, script: str) -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    work.chmod(0o777)
    spec = ContainerSpec(
        hostname="sandbox",
        args=("/bin/sh", "-c", script),
        env={},
        cgroups_path=f"/slipway/{cid}",
        mounts=(rw_bind(work, "/app"),),
        memory_limit_bytes=128 * 1024 * 1024,
        pids_limit=32,
    )
    return write_bundle(tmp_path / cid, build_config(spec, stack))


async def test_create_start_state_ps_kill_delete(tmp_path: Path) -> None:
    stack = HostStack(tmp_path / "state")
    stack.prepare()
    runc = Runc(tmp_path / "runc")
    cid = f"oci-test-{tmp_path.name[-12:]}".replace("_", "-")
    b = bundle(tmp_path, stack, cid, "echo hello > /app/out; sleep 60")
    out = open(tmp_path / "out.log", "wb")
    try:
        await runc.create(cid, b, pid_file=tmp_path / "pid", output=out.fileno())
        with pytest.raises(errors.AlreadyExists):
            await runc.create(cid, b, pid_file=tmp_path / "pid2")
        created = await runc.state(cid)
        assert created is not None and created.status == "created"
        await runc.start(cid)

        async def running() -> bool:
            st = await runc.state(cid)
            return st is not None and st.status == "running"

        await eventually_async(running, timeout=10)
        await eventually_async(
            lambda: asyncio.sleep(0, (tmp_path / "work" / "out").exists()), timeout=10
        )
        assert (tmp_path / "work" / "out").read_text() == "hello\n"
        assert len(await runc.ps(cid)) >= 1
        assert cid in [c.id for c in await runc.list()]
        await runc.kill(cid, signal.SIGKILL)

        async def stopped() -> bool:
            st = await runc.state(cid)
            return st is not None and st.status == "stopped"

        await eventually_async(stopped, timeout=10)
        await runc.delete(cid)
        assert await runc.state(cid) is None
        with pytest.raises(errors.NotFound):
            await runc.delete(cid)
        await runc.kill(cid, missing_ok=True)
    finally:
        out.close()
        await runc.delete(cid, force=True, missing_ok=True)


async def test_run_to_completion_returns_status_and_output(tmp_path: Path) -> None:
    stack = HostStack(tmp_path / "state")
    stack.prepare()
    runc = Runc(tmp_path / "runc")
    cid = f"oci-run-{tmp_path.name[-12:]}".replace("_", "-")
    b = bundle(tmp_path, stack, cid, "id -u; hostname; exit 7")
    status, output = await runc.run(cid, b, timeout=30)
    assert status == 7
    assert output.split() == ["64000", "sandbox"]
    assert await runc.state(cid) is None  # run deletes the container


async def test_create_failure_is_translated(tmp_path: Path) -> None:
    stack = HostStack(tmp_path / "state")
    stack.prepare()
    runc = Runc(tmp_path / "runc")
    b = bundle(tmp_path, stack, "oci-bad", "true")
    (b / "config.json").write_text("{not json")
    with pytest.raises(errors.FailedPrecondition):
        await runc.create("oci-bad", b, pid_file=tmp_path / "pid")
