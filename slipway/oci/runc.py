"""An asyncio wrapper around the runc command line, with our own state root.

Every call runs ``runc --root STATE ...`` through ``create_subprocess_exec``
with a timeout, so a wedged runc cannot hang a control loop. runc's failures
come back as ``slipway.errors``:

    container does not exist      -> NotFound
    container ... already exists  -> AlreadyExists
    runc missing                  -> FailedPrecondition
    timed out                     -> Unavailable
    anything else                 -> FailedPrecondition (message = runc's stderr)

Long-running foreground containers (``runc run``) are not started from here:
``run_argv`` gives the argv for a supervising process (the agent's shim) to
exec, because their lifetime must not be tied to this process.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import signal as signals
from dataclasses import dataclass
from pathlib import Path

from slipway import engines, errors


@dataclass(frozen=True)
class ContainerState:
    id: str
    status: str  # creating | created | running | paused | stopped
    pid: int
    bundle: str
    created: str = ""
    annotations: dict[str, str] | None = None

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "created", "creating")

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> ContainerState:
        annotations = obj.get("annotations")
        return cls(
            id=str(obj.get("id", "")),
            status=str(obj.get("status", "")),
            pid=int(obj.get("pid") or 0),  # type: ignore[call-overload]
            bundle=str(obj.get("bundle", "")),
            created=str(obj.get("created", "")),
            annotations=dict(annotations) if isinstance(annotations, dict) else None,
        )


def _translate(stderr: str, what: str) -> errors.SlipwayError:
    text = stderr.strip().splitlines()[-1] if stderr.strip() else f"runc {what} failed"
    lowered = text.lower()
    if "does not exist" in lowered or "not found" in lowered:
        return errors.NotFound(text, reason="container_not_found")
    if "already exists" in lowered:
        return errors.AlreadyExists(text, reason="container_exists")
    return errors.FailedPrecondition(text, reason="runc_failed")


class Runc:
    def __init__(self, root: Path, *, binary: str | None = None, timeout: float = 30.0) -> None:
        self.root = root
        self.binary = binary or engines.find_binary("runc")
        self.timeout = timeout

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    async def _run(self, what: str, *args: str, timeout: float | None = None) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(*args),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise errors.FailedPrecondition(f"runc not found at {self.binary}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout or self.timeout)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise errors.Unavailable(f"runc {what} timed out", reason="runc_timeout") from exc
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        if proc.returncode != 0:
            raise _translate(err.decode(errors="replace"), what)
        return out.decode(errors="replace")

    def run_argv(
        self, container_id: str, bundle: Path, *, pid_file: Path, keep: bool = True
    ) -> list[str]:
        """argv of a foreground ``runc run``: it waits for the container and
        exits with its status (128 + signal for a signal death)."""
        args = ["run", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if keep:
            # Keep the container (and its cgroup) after exit, so the caller can
            # read the OOM counter before deleting it.
            args.append("--keep")
        return self._argv(*args, container_id)

    async def create(
        self,
        container_id: str,
        bundle: Path,
        *,
        pid_file: Path,
        output: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Create (not start) a container.

        runc hands its own stdio to the container, so they are never pipes
        here (a pipe would stay open as long as the container runs): the
        container's stdout/stderr go to ``output`` (a file descriptor) or
        /dev/null, and runc's errors are read back from its ``--log`` file.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        log_path = bundle / "runc-create.log"
        log_path.unlink(missing_ok=True)
        sink = output if output is not None else asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--root",
            str(self.root),
            "--log",
            str(log_path),
            "--log-format",
            "json",
            "create",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(pid_file),
            container_id,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
        try:
            code = await asyncio.wait_for(proc.wait(), timeout or self.timeout)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise errors.Unavailable("runc create timed out", reason="runc_timeout") from exc
        if code != 0:
            raise _translate(_last_error(log_path), "create")

    async def start(self, container_id: str) -> None:
        await self._run("start", "start", container_id)

    async def run(self, container_id: str, bundle: Path, *, timeout: float) -> tuple[int, str]:
        """Run a container to completion; returns (exit status, combined output)."""
        self.root.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            *self._argv("run", "--bundle", str(bundle), container_id),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            await self.kill(container_id, signals.SIGKILL, all_processes=True, missing_ok=True)
            proc.kill()
            await proc.wait()
            await self.delete(container_id, force=True, missing_ok=True)
            raise
        return int(proc.returncode or 0), out.decode(errors="replace")

    async def kill(
        self,
        container_id: str,
        sig: int = signals.SIGTERM,
        *,
        all_processes: bool = True,
        missing_ok: bool = False,
    ) -> None:
        args = ["kill"]
        if all_processes:
            args.append("--all")
        try:
            await self._run("kill", *args, container_id, str(int(sig)))
        except errors.NotFound:
            if not missing_ok:
                raise
        except errors.FailedPrecondition as exc:
            # Signalling a container that just stopped is not an error for callers.
            if not (missing_ok and "not running" in str(exc)):
                raise

    async def delete(
        self, container_id: str, *, force: bool = False, missing_ok: bool = False
    ) -> None:
        args = ["delete"]
        if force:
            args.append("--force")
        try:
            await self._run("delete", *args, container_id)
        except errors.NotFound:
            if not missing_ok:
                raise

    async def state(self, container_id: str) -> ContainerState | None:
        """The container's state, or None when runc does not know it."""
        try:
            out = await self._run("state", "state", container_id)
        except errors.NotFound:
            return None
        return ContainerState.from_json(json.loads(out))

    async def list(self) -> builtins.list[ContainerState]:
        out = await self._run("list", "list", "--format", "json")
        data = json.loads(out or "null") or []
        return [ContainerState.from_json(item) for item in data]

    async def ps(self, container_id: str) -> builtins.list[int]:
        """Host pids of every process in the container."""
        out = await self._run("ps", "ps", "--format", "json", container_id)
        return [int(p) for p in json.loads(out or "null") or []]


def _last_error(log_path: Path) -> str:
    """The message of the last error entry in a runc --log-format json file."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", ""))
    return ""
