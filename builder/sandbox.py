"""Run buildpack steps inside a runc container on the dynos' stack.

Buildpacks run app code (setup.py, npm install scripts), so every step
(detect, compile, release) runs in a container: non-root user, no capabilities,
no new privileges, memory and pids limits, the stack's root filesystem
read-only. Mounts inside the container:

    /app   <- work/app   the build dir, read-write; the slug is made from it
    /tmp   <- work/tmp   scratch, holding tmp/cache (CACHE_DIR, read-write),
                         tmp/env (ENV_DIR, root-owned so read-only to the build)
                         and tmp/buildpacks/N-name (copies, so `export` can be written)

Network: with a ``SandboxNetwork`` (the daemon's default) every step gets a
network namespace of its own, wired by the CNI plugins like a dyno's: egress
through NAT (pip and npm reach their registries), nothing of the host (no NATS,
no etcd, no SSH), no other sandbox, no link-local/metadata range. Without one
(``--build-network host``) steps share the builder host's network.

The runner is behind the small ``Sandbox`` protocol so the job code does not
care how containers are made; ``RuncSandbox`` builds its bundles with
``slipway.oci`` (the same stacks, spec and runc wrapper as dynos), as the same
non-root user (``SANDBOX_UID``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from slipway import errors, log, logline, oci
from slipway.cni import SandboxNetwork

OnLine = Callable[[str], Awaitable[None]]

DEFAULT_MEMORY_MB = 2048
DEFAULT_PIDS = 2048
_CHUNK = 64 * 1024

_log = log.get("builder.sandbox")


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    timed_out: bool = False


class Sandbox(Protocol):
    """Runs one program for a build and reports its output line by line."""

    stack_name: str
    uid: int
    gid: int

    async def run(
        self,
        argv: Sequence[str],
        *,
        app_dir: Path,
        tmp_dir: Path,
        env: Mapping[str, str],
        on_line: OnLine,
        timeout: float,
        on_stderr: OnLine | None = None,
    ) -> RunResult:
        """Run ``argv``; stdout lines go to ``on_line``, stderr lines to ``on_stderr``
        (or to ``on_line`` too when it is None). Never raises for a non-zero exit."""
        ...


async def _pump(stream: asyncio.StreamReader, on_line: OnLine) -> None:
    """Split a byte stream into lines (at most MAX_LINE_BYTES each) as they arrive."""
    buf = b""
    while chunk := await stream.read(_CHUNK):
        buf += chunk
        while (nl := buf.find(b"\n")) >= 0:
            line, buf = buf[:nl], buf[nl + 1 :]
            for piece in logline.split_message(line.decode(errors="replace").rstrip("\r")):
                await on_line(piece)
        if len(buf) > logline.MAX_LINE_BYTES:
            for piece in logline.split_message(buf.decode(errors="replace")):
                await on_line(piece)
            buf = b""
    if buf:
        await on_line(buf.decode(errors="replace").rstrip("\r"))


class RuncSandbox:
    """One runc container per step, in a runc state root owned by this builder."""

    def __init__(
        self,
        state_dir: Path,
        stack: oci.Stack,
        *,
        uid: int = oci.SANDBOX_UID,
        gid: int = oci.SANDBOX_GID,
        memory_mb: int = DEFAULT_MEMORY_MB,
        pids: int = DEFAULT_PIDS,
        network: SandboxNetwork | None = None,
    ) -> None:
        self._stack = stack
        self.network = network
        self.stack_name = stack.name
        self.uid = uid
        self.gid = gid
        self._memory = memory_mb * 1024 * 1024
        self._pids = pids
        # A private runc root: a restarted builder may remove whatever it finds
        # here, knowing no other builder's containers live in it.
        self._runc = oci.Runc(state_dir / "runc")
        self._bundles = state_dir / "bundles"

    async def prepare(self) -> None:
        """Build the stack rootfs; remove containers left by a previous run of this builder."""
        await asyncio.to_thread(self._stack.prepare)
        for state in await self._runc.list():
            _log.warning("stale build container removed", container=state.id)
            await self._destroy(state.id)
        shutil.rmtree(self._bundles, ignore_errors=True)
        self._bundles.mkdir(parents=True, exist_ok=True)
        if self.network is not None:
            await asyncio.to_thread(self.network.prepare)
            await self.network.detach_all_except(set())  # steps of a previous run
            # Static rules: no step is reachable from anywhere; the same denials as dynos.
            await self.network.apply_firewall(self.network.firewall_spec(), force=True)

    def spec(
        self, cid: str, argv: Sequence[str], app_dir: Path, tmp_dir: Path, env: Mapping[str, str]
    ) -> oci.ContainerSpec:
        return oci.ContainerSpec(
            hostname="build",
            args=tuple(argv),
            env=dict(env),
            cgroups_path=f"/slipway-builds/{cid}",
            # /tmp is a bind (not the default tmpfs): it holds the cache, ENV_DIR and
            # buildpacks, and big pip/npm temp files must not count as memory.
            mounts=(oci.rw_bind(app_dir, "/app"), oci.rw_bind(tmp_dir, "/tmp")),
            cwd="/app",
            uid=self.uid,
            gid=self.gid,
            memory_limit_bytes=self._memory,
            pids_limit=self._pids,
        )

    async def run(
        self,
        argv: Sequence[str],
        *,
        app_dir: Path,
        tmp_dir: Path,
        env: Mapping[str, str],
        on_line: OnLine,
        timeout: float,
        on_stderr: OnLine | None = None,
    ) -> RunResult:
        cid = f"build-{uuid.uuid4().hex[:16]}"
        bundle = self._bundles / cid
        config = oci.build_config(self.spec(cid, argv, app_dir, tmp_dir, env), self._stack)
        if self.network is None:
            return await self._run(cid, bundle, config, on_line, on_stderr, timeout)
        att = await self.network.attach(cid)
        try:
            config["linux"]["namespaces"].append({"type": "network", "path": str(att.netns_path)})
            return await self._run(cid, bundle, config, on_line, on_stderr, timeout)
        finally:
            # DEL always, also when the step was cancelled or runc failed.
            await asyncio.shield(self.network.detach(att))

    async def _run(
        self,
        cid: str,
        bundle: Path,
        config: dict[str, object],
        on_line: OnLine,
        on_stderr: OnLine | None,
        timeout: float,
    ) -> RunResult:
        pid_file = bundle / "pid"
        oci.write_bundle(bundle, config)
        proc = await asyncio.create_subprocess_exec(
            *self._runc.run_argv(cid, bundle, pid_file=pid_file, keep=False),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(_pump(proc.stdout, on_line))
                    tg.create_task(_pump(proc.stderr, on_stderr or on_line))
                    tg.create_task(proc.wait())
        except TimeoutError:
            timed_out = True
        finally:
            if proc.returncode is None:
                # Timeout or cancellation: the container must not outlive the step.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._kill(cid, proc))
            started = pid_file.exists()
            shutil.rmtree(bundle, ignore_errors=True)
        if not started and not timed_out:
            # runc itself failed (its message was in the output): not the app's fault.
            raise errors.Unavailable(
                f"the build sandbox could not start (runc exit {proc.returncode})",
                reason="sandbox_failed",
            )
        code = proc.returncode if proc.returncode is not None else -9
        return RunResult(exit_code=code, timed_out=timed_out)

    async def _kill(self, cid: str, proc: asyncio.subprocess.Process) -> None:
        async with asyncio.timeout(20):
            await self._destroy(cid)
            await proc.wait()

    async def _destroy(self, cid: str) -> None:
        with contextlib.suppress(errors.SlipwayError):
            await self._runc.kill(cid, signal.SIGKILL, missing_ok=True)
        with contextlib.suppress(errors.SlipwayError):
            await self._runc.delete(cid, force=True, missing_ok=True)
