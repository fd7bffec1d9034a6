"""DynoSupervisor: the node's dynos, reconciled toward the desired set.

Interface driven by the gRPC link (level-based):

    await sup.set_desired(specs)   the full desired set for this node
    await sup.restart(key)         ps:restart of one dyno (stop, start fresh)
    await sup.stop_dyno(key)       ps:stop of one dyno (stays down)
    sup.snapshot()                 every dyno's DynoStatus, now
    sup.dyno(key)                  one Dyno (attached one-offs: agent/attach.py)
    sup.events                     bounded queue of DynoStatus changes
                                   (drop-oldest: heartbeats carry full snapshots)

``run()`` owns every dyno task in one TaskGroup. Its loop wakes on a desired
set, a dyno exit or the earliest pending restart, computes
``plan(desired, actual, now)`` and applies it. Cancelling ``run()`` leaves
every container running (their records stay on disk): losing the agent, or
the controller, never stops dynos. Until the first desired set arrives the
supervisor keeps what it adopted, including crash restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from agent import records, sandbox
from agent.dyno import Dyno, Runtime, dyno_dir, shim_pid_alive
from agent.model import DynoSpec, DynoState, DynoStatus
from agent.network import HEAL_INTERVAL
from agent.plan import Plan, plan
from agent.records import DynoRecord
from slipway import errors, log
from slipway.aio import wait_set

logger = log.get("agent.supervisor")

EVENT_QUEUE_SIZE = 1000
RESYNC_INTERVAL = 5.0
SLUG_GC_INTERVAL = 600.0


class DynoSupervisor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.config = rt.config
        self._dynos: dict[str, Dyno] = {}
        self._desired: list[DynoSpec] | None = None
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self.events: asyncio.Queue[DynoStatus] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self.ready = asyncio.Event()  # set once adoption is done

    # ----- the interface -----------------------------------------------------

    async def set_desired(self, specs: list[DynoSpec]) -> None:
        keys = [s.key for s in specs]
        if len(set(keys)) != len(keys) or not all(keys):
            raise errors.InvalidArgument("every desired dyno needs a unique instance id")
        self._desired = list(specs)
        self._wake.set()

    async def restart(self, key: str) -> None:
        dyno = self._get(key)
        self._spawn(key, self._restart(dyno))

    async def stop_dyno(self, key: str) -> None:
        dyno = self._get(key)
        self._spawn(key, dyno.stop(hold=True))

    def snapshot(self) -> list[DynoStatus]:
        return [d.status() for _, d in sorted(self._dynos.items())]

    def dyno(self, key: str) -> Dyno | None:
        """The dyno of placement ``key`` on this node, if any (the AttachService's lookup)."""
        return self._dynos.get(key)

    def find(self, app: str, name: str) -> list[str]:
        """Keys of the dynos named ``name`` of ``app`` (for name-based requests)."""
        return [
            k
            for k, d in self._dynos.items()
            if (d.record.spec.app, d.record.spec.name) == (app, name)
        ]

    @property
    def reserved_memory_mb(self) -> int:
        return sum(
            d.record.spec.memory_mb
            for d in self._dynos.values()
            if d.record.state is not DynoState.DOWN
        )

    # ----- the loop ----------------------------------------------------------

    async def run(self) -> None:
        self.rt.stack.prepare()
        self.rt.use_overlay = await overlay_works(self.config.data_dir)
        net = self.rt.network
        if net is not None:
            await asyncio.to_thread(net.prepare)
            net.records = lambda: [d.record for d in self._dynos.values()]
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            await self._adopt()
            self.ready.set()
            last_gc = last_heal = self.rt.clock.now()
            while True:
                now = self.rt.clock.now()
                desired = self._desired if self._desired is not None else self._kept()
                p = plan(desired, {k: d.actual() for k, d in self._dynos.items()}, now)
                self._apply(p)
                if net is not None:
                    heal = now - last_heal > HEAL_INTERVAL
                    last_heal = now if heal else last_heal
                    try:
                        await net.sync(force=heal)
                    except errors.SlipwayError as exc:
                        logger.error("firewall not applied", error=str(exc))
                if now - last_gc > SLUG_GC_INTERVAL:
                    last_gc = now
                    in_use = {d.record.spec.slug_digest for d in self._dynos.values()}
                    await asyncio.to_thread(self.rt.slugs.remove_unused, in_use)
                timeout = RESYNC_INTERVAL
                if p.wake_at is not None:
                    timeout = max(0.0, min(timeout, p.wake_at - now))
                with contextlib.suppress(TimeoutError):
                    await wait_set(self._wake, timeout)
                self._wake.clear()

    def _kept(self) -> list[DynoSpec]:
        # Before the controller speaks: everything we adopted stays desired.
        return [d.record.spec for d in self._dynos.values() if not d.record.stopping]

    def _apply(self, p: Plan) -> None:
        for spec in p.start:
            try:
                self._start(spec)
            except errors.SlipwayError as exc:
                # Retried on the next pass; the controller sees it missing.
                logger.error("dyno not started", app=spec.app, dyno=spec.name, error=str(exc))
        for key in p.stop:
            dyno = self._dynos[key]
            dyno.record.stopping = True  # the plan must not pick it again
            self._spawn(key, self._stop_and_forget(dyno))
        for key in p.restart:
            dyno = self._dynos[key]
            dyno.record.restarts += 1
            dyno.active = True  # claimed now, so the next plan leaves it alone
            dyno.set_state(DynoState.STARTING)
            self._spawn(key, dyno.run())

    def _spawn(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None, "supervisor is not running"
        task = self._tg.create_task(_contained(key, coro))
        bucket = self._tasks.setdefault(key, set())
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        task.add_done_callback(lambda _t: self._wake.set())

    def _changed(self, dyno: Dyno) -> None:
        status = dyno.status()
        if self.events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.events.get_nowait()
        self.events.put_nowait(status)
        self._wake.set()

    def _get(self, key: str) -> Dyno:
        dyno = self._dynos.get(key)
        if dyno is None:
            raise errors.NotFound(f"no dyno {key} on this node")
        return dyno

    # ----- starting and stopping ---------------------------------------------

    def _new_dyno(self, record: DynoRecord, paths: sandbox.DynoPaths) -> Dyno:
        dyno = Dyno(record=record, paths=paths, rt=self.rt, on_change=self._changed)
        self._dynos[dyno.key] = dyno
        self._spawn(dyno.key, dyno.tailer.run())
        return dyno

    def _start(self, spec: DynoSpec) -> None:
        paths = dyno_dir(self.config.data_dir, spec.key)
        if paths.root.exists():
            shutil.rmtree(paths.root)
        paths.root.mkdir(parents=True)
        record = DynoRecord(
            spec=spec,
            container_id=sandbox.container_id(self.config.container_prefix, spec),
            port=self._allocate_port() if spec.is_web else 0,
            changed_at=self.rt.clock.now(),
        )
        records.save(paths.record, record)
        dyno = self._new_dyno(record, paths)
        dyno.active = True
        self._changed(dyno)
        self._spawn(dyno.key, dyno.run())

    async def _stop_and_forget(self, dyno: Dyno) -> None:
        await dyno.stop()
        await dyno.release_network()  # also when it was already down (adopted, stopping)
        await dyno.tailer.drain(final=True)
        self._dynos.pop(dyno.key, None)
        for task in list(self._tasks.pop(dyno.key, set())):
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.to_thread(dyno.remove_files)

    async def _restart(self, dyno: Dyno) -> None:
        await dyno.stop()
        r = dyno.record
        r.stopping = r.held = False
        r.crashes = r.restarts = 0
        dyno.active = True
        dyno.set_state(DynoState.STARTING, announce=True)
        await dyno.run()

    def _allocate_port(self) -> int:
        used = {d.record.port for d in self._dynos.values()}
        low, high = self.config.port_range
        for port in range(low, high + 1):
            if port not in used and _bindable(port):
                return port
        raise errors.ResourceExhausted("no free port left in the agent's range")

    # ----- adoption ----------------------------------------------------------

    async def _adopt(self) -> None:
        known: set[str] = set()
        for root, record in records.load_all(self.config.data_dir / "dynos"):
            paths = sandbox.DynoPaths(root)
            known.add(record.container_id)
            dyno = self._new_dyno(record, paths)
            state = await self.rt.runc.state(record.container_id)
            running = state is not None and state.running
            exited = paths.status.exists()
            log = logger.bind(app=record.spec.app, dyno=record.spec.name)
            if exited or running or shim_pid_alive(paths):
                # Still running, or it ended while we were away: watch it; the
                # watch loop reports an exit it finds and decides what follows.
                log.info("dyno adopted", running=running, exited=exited)
                dyno.active = True
                dyno.exited.clear()
                self._spawn(dyno.key, dyno.run(adopted=True))
                if running and not exited:
                    self._spawn(dyno.key, self._check_adopted(dyno))
                if record.stopping:
                    self._spawn(dyno.key, self._stop_and_forget(dyno))
            elif record.stopping:
                self._spawn(dyno.key, self._stop_and_forget(dyno))
            elif record.state in (DynoState.STARTING, DynoState.UP):
                # Gone without a trace (host reboot): a crash with no status.
                log.info("dyno lost while agent was away")
                self._spawn(dyno.key, self._finish_lost(dyno))
        await self._remove_orphans(known)
        if self.rt.network is not None:
            # Networks of containers that have no record (a crash mid-start), then
            # every rule restored from the records.
            await self.rt.network.remove_orphans(known)
            await self.rt.network.sync(force=True)

    async def _check_adopted(self, dyno: Dyno) -> None:
        """CNI CHECK of an adopted dyno; a broken network ends the run (it restarts
        with a fresh one, like any crash)."""
        if await dyno.check_network():
            return
        dyno.heroku("Error R99 (Platform error) -> the dyno's network is broken; restarting")
        await dyno._kill(signal.SIGKILL)

    async def _finish_lost(self, dyno: Dyno) -> None:
        dyno.active = True
        try:
            await dyno._finish(None)
        finally:
            dyno.active = False

    async def _remove_orphans(self, known: set[str]) -> None:
        prefix = f"{self.config.container_prefix}."
        try:
            states = await self.rt.runc.list()
        except errors.SlipwayError as exc:
            logger.warning("runc list failed", error=str(exc))
            return
        for st in states:
            if st.id.startswith(prefix) and st.id not in known:
                logger.warning("removing orphan container", container=st.id)
                await self.rt.runc.delete(st.id, force=True, missing_ok=True)


async def _contained(key: str, coro: Coroutine[Any, Any, None]) -> None:
    """One dyno's failure is logged, never allowed to end the supervisor."""
    try:
        await coro
    except Exception:
        logger.exception("dyno task failed", instance=key)


def _bindable(port: int) -> bool:
    # Dynos usually bind 0.0.0.0:$PORT; the advertise address may not even be
    # local (NAT), so probe the wildcard address.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


async def overlay_works(data_dir: Path) -> bool:
    """Can this host mount overlayfs with layers in the data dir? (else: copies)"""
    data_dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(dir=data_dir, prefix=".overlay-probe-"))
    try:
        dirs = {n: base / n for n in ("lower", "upper", "work", "merged")}
        for d in dirs.values():
            d.mkdir()
        opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
        if await _exec("mount", "-t", "overlay", "overlay", "-o", opts, str(dirs["merged"])):
            await _exec("umount", str(dirs["merged"]))
            return True
        logger.warning("overlayfs unavailable; dynos get copies of their slug")
        return False
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _exec(*argv: str) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), 10) == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False
