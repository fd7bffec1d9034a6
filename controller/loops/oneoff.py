"""One-off dynos (`slipway run`, `run:detached`): naming, placing, ending, reaping.

    run.N         N from a per-app counter (keys.run_seq): unique, increasing
    node          the scheduler's own capacity rule (scheduler.choose_node)
    placement     {prefix}/dynos/{app}/{instance}, like any dyno:
                    attached: kind "attached", under a lease the RunDyno call keeps
                              alive, so a controller that dies takes its sessions'
                              dynos with it (the lease expires, the agent stops them)
                    detached: kind "oneoff", no lease
    ending        deleting the placement: the agent hangs up (SIGHUP), then stops the
                  dyno the usual way (SIGTERM, grace, SIGKILL); `ps:stop run.N` is the same

The leader's ``Reaper`` removes detached run.N placements once their agent
reports them down (they exited), and run counters of apps that are gone.
Release-phase dynos (release.N) are the release phase's own business.
The relay of an attached session lives in controller/api/run_api.py.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from controller.bus.apilog import ApiLog
from controller.core.cron import SCHEDULER_TYPE
from controller.core.scheduler import CRASHED, DOWN, Placement
from controller.core.sizes import DEFAULT_SIZE, SizeTable
from controller.loops.leader import Leadership
from controller.store.snapshot import choose_one_off_node
from controller.store.state import State
from slipway import errors
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.records import NodeRecord, StatusRecord

log = slog.get("controller.oneoff")

RUN_TYPE = "run"
# One-off types the reaper removes once they end (release.N is the release phase's).
REAPED_TYPES = frozenset({RUN_TYPE, SCHEDULER_TYPE})
MAX_COMMAND_BYTES = 16 * 1024


@dataclass(frozen=True)
class RunRequest:
    app: str
    command: str
    attach: bool
    tty: bool = False
    rows: int = 0
    cols: int = 0
    size: str = ""


@dataclass(frozen=True)
class Started:
    placement: Placement
    node: NodeRecord
    lease_id: int | None  # attached: the lease the session keeps alive


def next_run_number(raw: bytes | None) -> int:
    """The counter's next value; a missing or unreadable counter starts at 1."""
    try:
        return int(raw or b"0") + 1
    except ValueError:
        return 1


def finished_runs(
    placements: Iterable[Placement], statuses: dict[str, StatusRecord]
) -> list[Placement]:
    """Detached run.N and scheduler.N placements whose dyno has ended (pure; the
    reaper deletes them)."""
    done = []
    for p in placements:
        if p.kind != "oneoff" or p.type not in REAPED_TYPES:
            continue
        status = statuses.get(p.instance_id)
        if status is not None and status.state in (DOWN, CRASHED):
            done.append(p)
    return done


def overdue(placements: Iterable[Placement], now: float) -> list[Placement]:
    """One-offs past their ``stop_after`` (scheduler dynos past their interval)."""
    return [
        p
        for p in placements
        if p.kind == "oneoff" and p.stop_after > 0 and now - p.created_at >= p.stop_after
    ]


def check_command(command: str) -> str:
    command = command.strip()
    if not command:
        raise errors.InvalidArgument("no command given: slipway run -a APP COMMAND")
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise errors.InvalidArgument(f"the command is over {MAX_COMMAND_BYTES} bytes")
    return command


class OneOffs:
    def __init__(
        self,
        state: State,
        sizes: SizeTable,
        *,
        lease_seconds: int = 10,
        detached_max_seconds: float = 86400.0,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        # A detached run is stopped after this long, as Heroku stops one-off dynos
        # after 24 h (an attached one: the session's own limit, run_api.py).
        self.detached_max_seconds = detached_max_seconds
        self.state = state
        self.etcd = state.etcd
        self.keys = state.keys
        self.sizes = sizes
        self.lease_seconds = lease_seconds

    async def _next_name(self, app: str) -> str:
        key = self.keys.run_seq(app)
        number = 0

        def bump(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            nonlocal number
            number = next_run_number(cur[key])
            return {key: str(number).encode()}

        await self.etcd.update([key], bump)
        return f"{RUN_TYPE}.{number}"

    async def start(self, req: RunRequest) -> Started:
        """Validate, name, place and write the placement of a new one-off dyno."""
        command = check_command(req.command)
        release = await self.state.get_release(req.app, 0)
        if not release.slug.digest:
            raise errors.FailedPrecondition(f"{req.app} has no slug to run; deploy first")
        size = self.sizes.get(req.size or DEFAULT_SIZE)
        node = await choose_one_off_node(
            self.etcd,
            self.keys,
            req.app,
            RUN_TYPE,
            size.memory_mb,
            stack=release.slug.stack,
            # Only nodes whose agent serves attach can run an attached dyno.
            eligible=lambda record: bool(record.attach_port) or not req.attach,
        )
        if node is None:
            raise errors.ResourceExhausted(
                f"no node has {size.memory_mb} MB free for a {size.name} one-off dyno"
                + (f" on stack {release.slug.stack}" if release.slug.stack else ""),
                reason="no_capacity",
            )
        name = await self._next_name(req.app)
        placement = Placement(
            app=req.app,
            name=name,
            type=RUN_TYPE,
            release=release.version,
            node=node.name,
            instance_id=uuid.uuid4().hex[:12],
            memory_mb=size.memory_mb,
            max_processes=size.max_processes,
            cpu_shares=size.cpu_shares,
            size=size.name,
            created_at=self.clock.now(),
            kind="attached" if req.attach else "oneoff",
            command=command,
            tty=req.attach and req.tty,
            rows=req.rows if req.tty else 0,
            cols=req.cols if req.tty else 0,
            attach_token=secrets.token_urlsafe(32) if req.attach else "",
            stop_after=0.0 if req.attach else self.detached_max_seconds,
        )
        lease_id: int | None = None
        if req.attach:
            lease = await self.etcd.lease(self.lease_seconds)
            lease_id = lease.id
        await self.etcd.put(
            self.keys.dyno(req.app, placement.instance_id), placement.encode(), lease=lease_id
        )
        log.info(
            "one-off dyno placed",
            app=req.app,
            dyno=name,
            node=node.name,
            release=release.version,
            attached=req.attach,
            tty=placement.tty,
        )
        return Started(placement, node, lease_id)

    async def keep_alive(self, lease_id: int) -> None:
        """Refresh an attached dyno's lease until cancelled (the session owns this task)."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if await self.etcd.refresh_lease(lease_id) <= 0:
                    log.warning("one-off lease expired", lease=lease_id)
                    return  # the placement is gone; the agent ends the dyno
            except errors.SlipwayError as exc:
                log.warning("one-off lease refresh failed", error=str(exc))

    async def end(self, placement: Placement, lease_id: int | None) -> None:
        """Remove the placement: the agent hangs up on the dyno and stops it."""
        try:
            await self.etcd.delete(self.keys.dyno(placement.app, placement.instance_id))
            if lease_id is not None:
                await self.etcd.revoke_lease(lease_id)
        except errors.SlipwayError as exc:
            # The lease (attached) still expires on its own a few seconds later.
            log.warning(
                "one-off placement not removed",
                app=placement.app,
                dyno=placement.name,
                error=str(exc),
            )


class Reaper:
    """The leader removes finished detached runs and scheduler runs, and stops
    scheduler runs that outlived their interval."""

    def __init__(
        self,
        oneoffs: OneOffs,
        leadership: Leadership,
        *,
        interval: float = 2.0,
        app_log: ApiLog | None = None,
    ) -> None:
        self.oneoffs = oneoffs
        self.etcd = oneoffs.etcd
        self.keys = oneoffs.keys
        self.clock = oneoffs.clock
        self.leadership = leadership
        self.interval = interval
        self.app_log = app_log

    async def run(self) -> None:
        await self.leadership.run_while_leading(
            "one-off reaper", self.reap_once, every=self.interval
        )

    async def reap_once(self) -> list[Placement]:
        kvs, _ = await self.etcd.get_prefix(self.keys.dynos())
        placements = [Placement.decode(kv.value) for kv in kvs]
        status_kvs, _ = await self.etcd.get_prefix(self.keys.statuses())
        statuses = {}
        for kv in status_kvs:
            status = StatusRecord.decode(kv.value)
            statuses[status.instance_id] = status
        done = finished_runs(placements, statuses)
        finished = {p.instance_id for p in done}
        late = [p for p in overdue(placements, self.clock.now()) if p.instance_id not in finished]
        if not self.leadership.is_leader:
            return []
        for p in done:
            await self.etcd.delete(self.keys.dyno(p.app, p.instance_id))
            log.info("one-off dyno finished", app=p.app, dyno=p.name, node=p.node)
        for p in late:
            # The agent stops the dyno the usual way (SIGTERM, grace, SIGKILL).
            await self.etcd.delete(self.keys.dyno(p.app, p.instance_id))
            log.info("one-off dyno stopped at its limit", app=p.app, dyno=p.name, node=p.node)
            if self.app_log is not None:
                self.app_log.emit(
                    p.app,
                    f"Stopping {p.name}: it reached its time limit of {p.stop_after:.0f} s"
                    + (" (its job's interval)" if p.type == SCHEDULER_TYPE else ""),
                    source="heroku",
                    process=p.name,
                )
        return done + late
