"""One dyno's runs: launch, watch (up, memory, exit), stop, and adoption.

A ``Dyno`` owns one placement (instance id) for its whole life on this node.
Each run is: prepare a fresh /app layer, spawn the shim (which runs the
foreground ``runc run``), wait for runc's pid file, then watch in one loop:

    status.json appeared      -> the run ended; report, decide crashed/down
    starting web dyno         -> probe advertise-address:$PORT; R10 at the boot timeout
    starting worker           -> up as soon as the process runs
    memory (cgroup v1)        -> R14 over quota (rate-limited), R15 kill over 2x

Restarts are not decided here: a crashed dyno records ``restart_at`` and the
supervisor's plan restarts it when the cool-off ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent import metrics, policy, records, sandbox
from agent.config import AgentConfig
from agent.logs import LogSink, LogTailer
from agent.model import DynoState, DynoStatus
from agent.network import DynoNetwork
from agent.plan import Actual
from agent.records import DynoRecord
from agent.slugcache import SlugCache
from slipway import errors, log
from slipway.aio import wait_set
from slipway.clock import Clock
from slipway.oci import SANDBOX_GID, SANDBOX_UID, Runc, Stack

logger = log.get("agent.dyno")

POLL_INTERVAL = 0.1


@dataclass
class Runtime:
    """What every dyno shares: configuration and the node's machinery."""

    config: AgentConfig
    runc: Runc
    stack: Stack
    slugs: SlugCache
    sink: LogSink
    clock: Clock
    # The dynos' own networks; None: host networking (--dyno-network host).
    network: DynoNetwork | None = None
    use_overlay: bool = True
    # Recent container start times (network set-up + shim spawn -> runc pid file).
    start_durations: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


def _seconds(value: float) -> str:
    return f"{value:g}"


class Dyno:
    def __init__(
        self,
        *,
        record: DynoRecord,
        paths: sandbox.DynoPaths,
        rt: Runtime,
        on_change: Callable[[Dyno], None],
    ) -> None:
        self.record = record
        self.paths = paths
        self.rt = rt
        self._on_change = on_change
        self.active = False  # a run (launch or watch) is in progress
        self.exited = asyncio.Event()
        self.memory_bytes = 0
        self._last_r14: float | None = None
        self._reason = ""
        self._killing = False
        self.tailer = LogTailer(
            path=paths.log,
            offset_path=paths.offset,
            sink=rt.sink,
            app=record.spec.app,
            process=record.spec.name,
        )
        self._log = logger.bind(app=record.spec.app, dyno=record.spec.name)

    # ----- views -------------------------------------------------------------

    @property
    def key(self) -> str:
        return self.record.spec.key

    @property
    def cgroup(self) -> str:
        return sandbox.cgroups_path(self.rt.config.container_prefix, self.record.container_id)

    def status(self) -> DynoStatus:
        r = self.record
        return DynoStatus(
            app=r.spec.app,
            name=r.spec.name,
            instance_id=r.spec.instance_id,
            process_type=r.spec.process_type,
            release=r.spec.release,
            state=r.state,
            exit_status=r.exit_status,
            restarts=r.restarts,
            memory_bytes=self.memory_bytes,
            memory_limit_bytes=r.spec.memory_mb * 1024 * 1024,
            port=r.port,
            container_id=r.container_id,
            changed_at=r.changed_at,
            started_at=r.started_at,
            reason=self._reason,
            stopping=r.stopping,
        )

    def actual(self) -> Actual:
        r = self.record
        return Actual(
            spec=r.spec,
            state=r.state,
            active=self.active,
            stopping=r.stopping,
            restart_at=r.restart_at,
            held=r.held,
        )

    # ----- bookkeeping -------------------------------------------------------

    def heroku(self, message: str) -> None:
        self.rt.sink.emit(self.record.spec.app, "heroku", self.record.spec.name, message)

    def save(self) -> None:
        records.save(self.paths.record, self.record)

    def set_state(self, state: DynoState, *, announce: bool = True) -> None:
        old = self.record.state
        self.record.state = state
        self.record.changed_at = self.rt.clock.now()
        if announce and old is not state:
            self.heroku(f"State changed from {old.value} to {state.value}")
        self.save()
        self._log.info("dyno state", state=state.value, previous=old.value)
        self._on_change(self)

    # ----- a run -------------------------------------------------------------

    async def run(self, *, adopted: bool = False) -> None:
        """One run of the dyno, from launch (or adoption) to its exit."""
        self.active = True
        self._killing = False
        try:
            if not adopted:
                self.exited.clear()
                try:
                    await self._launch()
                except Exception as exc:
                    # Slug missing, disk full, runc broken: a crash like any
                    # other, restarted on the same schedule.
                    self._log.error("dyno launch failed", error=str(exc))
                    self.heroku(f"Error launching process: {exc}")
                    await self._finish(None)
                    return
            while True:
                try:
                    await self._watch()
                    return
                except Exception:
                    # The container is still there; never abandon watching it.
                    self._log.exception("dyno watch failed")
                    await asyncio.sleep(1.0)
        finally:
            self.active = False

    async def _launch(self) -> None:
        spec, cfg = self.record.spec, self.rt.config
        self._reason = ""
        self.record.exit_status = None
        self.record.restart_at = None
        self.record.started_at = self.rt.clock.now()
        if self.record.state is not DynoState.STARTING:
            self.set_state(DynoState.STARTING)
        slug_dir = await self.rt.slugs.ensure(spec.slug_digest)
        await self.rt.runc.delete(self.record.container_id, force=True, missing_ok=True)
        sandbox.reset_run_files(self.paths)
        await asyncio.to_thread(
            sandbox.prepare_app_dir,
            self.paths,
            slug_dir,
            use_overlay=self.rt.use_overlay,
            uid=SANDBOX_UID,
            gid=SANDBOX_GID,
        )
        netns = None
        began = time.monotonic()  # the start time counts the network's set-up
        if self.rt.network is not None:
            # The record names the dyno's address: the firewall plan and adoption read it.
            netns = await self.rt.network.attach(self.record)
            self.save()
        sandbox.write_dyno_bundle(
            netns=netns,
            spec=spec,
            stack=self.rt.stack,
            paths=self.paths,
            slug_dir=slug_dir,
            cid=self.record.container_id,
            prefix=cfg.container_prefix,
            port=self.record.port,
            use_overlay=self.rt.use_overlay,
            hard_factor=cfg.timings.memory_hard_factor,
        )
        self.save()
        network_ms = round((time.monotonic() - began) * 1000)  # network + bundle
        self.heroku(f"Starting process with command `{spec.command}`")
        argv = [
            sys.executable,
            "-m",
            "agent.shim",
            "--log",
            str(self.paths.log),
            "--status",
            str(self.paths.status),
            "--pid-file",
            str(self.paths.shim_pid),
            *self._attach_args(),
            "--",
            *self.rt.runc.run_argv(
                self.record.container_id, self.paths.bundle, pid_file=self.paths.pid
            ),
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(self.paths.root),
        )
        await proc.wait()  # the shim forks and its first process returns at once
        deadline = began + cfg.timings.launch_timeout
        while not (self.paths.pid.exists() or self.paths.status.exists()):
            if time.monotonic() > deadline:
                raise errors.Unavailable("container did not start in time", reason="launch_timeout")
            await asyncio.sleep(0.005)
        if self.paths.pid.exists():
            elapsed = time.monotonic() - began
            self.rt.start_durations.append(elapsed)
            self._log.info(
                "container started", duration_ms=round(elapsed * 1000), network_ms=network_ms
            )

    def _attach_args(self) -> list[str]:
        """Shim flags of an attached one-off: its stdio goes to attach.sock, not out.log."""
        spec = self.record.spec
        if not spec.attached:
            return []
        # Relative to the shim's cwd (the dyno dir): a Unix socket path is
        # limited to 108 bytes and data dirs can be deep.
        args = ["--attach", self.paths.attach_sock.name]
        args += ["--linger", _seconds(self.rt.config.timings.attach_linger)]
        args += ["--hangup-file", self.paths.hangup.name]
        if spec.tty:
            args += ["--tty", "--rows", str(spec.rows), "--cols", str(spec.cols)]
        return args

    def _read_status(self) -> dict[str, float] | None:
        try:
            data: dict[str, float] = json.loads(self.paths.status.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return None

    def _shim_alive(self) -> bool:
        try:
            pid = int(self.paths.shim_pid.read_text().strip())
        except (FileNotFoundError, ValueError):
            # The shim writes its pid first thing; missing means not yet.
            return True
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return b"agent.shim" in fh.read()
        except OSError:
            return False

    async def _watch(self) -> None:
        spec, timings = self.record.spec, self.rt.config.timings
        boot_deadline = time.monotonic() + timings.boot_timeout
        next_probe = next_memory = 0.0
        while True:
            status = self._read_status()
            if status is not None:
                await self._finish(int(status.get("exit_status", -1)))
                return
            if not self._shim_alive():
                # Gone without a status (killed by someone): the exit is unknown.
                await asyncio.sleep(POLL_INTERVAL)
                if self._read_status() is None:
                    await self._finish(None)
                    return
                continue
            now = time.monotonic()
            if self.record.state is DynoState.STARTING and self.paths.pid.exists():
                if not spec.is_web:
                    self.set_state(DynoState.UP)
                elif now >= next_probe:
                    next_probe = now + timings.up_probe_interval
                    if await self._probe():
                        self.set_state(DynoState.UP)
                    elif now >= boot_deadline and not self._killing:
                        self.heroku(
                            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT "
                            f"within {_seconds(timings.boot_timeout)} seconds of launch"
                        )
                        self.heroku("Stopping process with SIGKILL")
                        self._reason = "R10"
                        await self._kill(signal.SIGKILL)
            if now >= next_memory:
                next_memory = now + timings.memory_interval
                await self._check_memory()
            await asyncio.sleep(POLL_INTERVAL)

    async def _probe(self) -> bool:
        # advertise-address:$PORT, as routers see it: with its own network the
        # dyno is reached through the host port mapping (portmap), so this also
        # proves the mapping and the firewall's allow rule.
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.rt.config.advertise_address, self.record.port), 1.0
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _check_memory(self) -> None:
        usage = metrics.dyno_memory(self.cgroup)
        if usage is None:
            return
        self.memory_bytes = usage
        quota = self.record.spec.memory_mb * 1024 * 1024
        hard = self.rt.config.timings.memory_hard_factor
        verdict = policy.memory_verdict(usage, quota, hard)
        if verdict is policy.MemoryVerdict.OK:
            return
        mem = f"mem={usage / 1024 / 1024:.0f}M({usage / quota * 100:.1f}%)"
        if verdict is policy.MemoryVerdict.R15 and not self._killing:
            self.heroku(f"Process running {mem}")
            self.heroku("Error R15 (Memory quota vastly exceeded)")
            self.heroku("Stopping process with SIGKILL")
            self._reason = "R15"
            await self._kill(signal.SIGKILL)
        elif verdict is policy.MemoryVerdict.R14:
            now = time.monotonic()
            if policy.should_log_r14(self._last_r14, now, self.rt.config.timings.r14_interval):
                self._last_r14 = now
                self.heroku(f"Process running {mem}")
                self.heroku("Error R14 (Memory quota exceeded)")

    async def _kill(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self._killing = True
        try:
            await self.rt.runc.kill(self.record.container_id, sig, missing_ok=True)
        except errors.SlipwayError as exc:
            self._log.warning("signal failed", error=str(exc))

    async def _finish(self, exit_status: int | None) -> None:
        """The run ended: publish its last words, report, decide what it is now."""
        await self.tailer.drain(final=True)
        if exit_status == 137 and not self._reason and metrics.oom_kills(self.cgroup) > 0:
            # The cgroup limit (2x the quota) fired before our sampler saw it.
            self._reason = "R15"
            self.heroku("Error R15 (Memory quota vastly exceeded)")
        if exit_status is not None:
            self.heroku(f"Process exited with status {exit_status}")
        with contextlib.suppress(errors.SlipwayError):
            await self.rt.runc.delete(self.record.container_id, force=True, missing_ok=True)
        await self.release_network()
        await asyncio.to_thread(self._discard_layer)
        self.memory_bytes = 0
        r = self.record
        r.exit_status = exit_status
        now = self.rt.clock.now()
        if r.stopping or r.held or r.spec.one_off:
            self._reason = self._reason or "stopped"
            self.set_state(DynoState.DOWN)
        else:
            self._reason = self._reason or "exited"
            decision = policy.on_exit(
                crashes_before=r.crashes,
                started_at=r.started_at,
                exited_at=now,
                schedule=self.rt.config.timings.restart,
            )
            if decision.crashes == 1:
                r.restarts = 0
            r.crashes = decision.crashes
            r.restart_at = decision.restart_at
            self.set_state(DynoState.CRASHED)
        self.exited.set()

    async def release_network(self) -> None:
        """CNI DEL of the run's network (idempotent; a failure is logged, not raised)."""
        if self.rt.network is None:
            return
        try:
            await self.rt.network.detach(self.record)
        except Exception as exc:
            self._log.error("dyno network not released", error=str(exc))
        self.save()

    async def check_network(self) -> bool:
        """CHECK of an adopted dyno's network; False when it is broken."""
        if self.rt.network is None:
            return True
        try:
            await self.rt.network.check(self.record)
        except Exception as exc:
            self._log.error("dyno network check failed", error=str(exc))
            return False
        return True

    def _discard_layer(self) -> None:
        # Heroku's ephemeral filesystem: the run's changes vanish with it.
        for d in (self.paths.upper, self.paths.work, self.paths.app_copy):
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)

    # ----- stopping ----------------------------------------------------------

    async def stop(self, *, hold: bool = False) -> None:
        """SIGTERM to every process, the grace period, then SIGKILL (R12)."""
        r, grace = self.record, self.rt.config.timings.stop_grace
        r.stopping = True
        r.held = r.held or hold
        self.save()
        if not self.active:
            if r.state is not DynoState.DOWN:
                self.set_state(DynoState.DOWN)
            return
        if r.spec.is_web and r.state is DynoState.UP:
            # Let routers drop this dyno before it stops accepting connections.
            await asyncio.sleep(self.rt.config.timings.route_drain)
        if r.spec.attached and await self._hang_up():
            return
        self.heroku("Stopping all processes with SIGTERM")
        await self._kill(signal.SIGTERM)
        try:
            await wait_set(self.exited, grace)
            return
        except TimeoutError:
            pass
        self.heroku(
            "Error R12 (Exit timeout) -> At least one process failed to exit "
            f"within {_seconds(grace)} seconds of SIGTERM"
        )
        self.heroku("Stopping remaining processes with SIGKILL")
        self._reason = "R12"
        await self._kill(signal.SIGKILL)
        try:
            await wait_set(self.exited, 10.0)
        except TimeoutError:
            self._log.error("dyno did not die after SIGKILL")

    async def _hang_up(self) -> bool:
        """An attached dyno's client is gone: SIGHUP first, as a closed terminal would.

        Also tells the shim (a file, so no start-up race) not to hold the output
        for a client. True when the dyno exited within the hang-up grace.
        """
        with contextlib.suppress(OSError):
            self.paths.hangup.touch()
        self.heroku("Stopping all processes with SIGHUP")
        await self._kill(signal.SIGHUP)
        try:
            await wait_set(self.exited, self.rt.config.timings.hangup_grace)
            return True
        except TimeoutError:
            return False

    def remove_files(self) -> None:
        shutil.rmtree(self.paths.root, ignore_errors=True)


def shim_pid_alive(paths: sandbox.DynoPaths) -> bool:
    try:
        pid = int(paths.shim_pid.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"agent.shim" in fh.read()
    except (OSError, ValueError):
        return False


def dyno_dir(data_dir: Path, key: str) -> sandbox.DynoPaths:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return sandbox.DynoPaths(data_dir / "dynos" / safe)
