"""Scheduler jobs on a fake clock against a real etcd: which slots run, once each.

The leader's pass (CronLoop.pass_once) is driven by hand; no agent runs the
placements (tests/integration/test_scheduler_runs.py runs real dynos).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from controller.core import cron
from controller.core.models import SlugInfo
from controller.core.scheduler import Placement
from controller.core.sizes import SizeTable
from controller.loops.cron import CronLoop
from controller.loops.leader import Leadership
from controller.loops.oneoff import OneOffs, Reaper, RunRequest
from controller.store.cron import Jobs
from controller.store.state import State
from slipway import errors
from slipway.clock import FakeClock
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.records import NodeRecord
from tests.harness import secure

pytestmark = pytest.mark.integration

SLUG = SlugInfo(digest="ab" * 32, size_bytes=10, stack="slipway-24")
NODE = NodeRecord(name="node-a", address="127.0.0.1", capacity_mb=4096, stack="slipway-24")
# 10:00:00 UTC on a day: slots of a 10-minute job start on the clock's tens.
START = 1_764_842_400.0


@dataclass
class Rig:
    etcd: Etcd
    state: State
    jobs: Jobs
    clock: FakeClock

    def loop(self, name: str = "me") -> CronLoop:
        leadership = Leadership(self.etcd, self.state.keys, name)
        leadership._set(True)
        return CronLoop(self.jobs, leadership)

    async def placements(self, app: str) -> list[Placement]:
        kvs, _ = await self.etcd.get_prefix(self.state.keys.dynos(app))
        return sorted((Placement.decode(kv.value) for kv in kvs), key=lambda p: p.index)


@contextlib.asynccontextmanager
async def rig(endpoint: str, prefix: str, *, deployed: bool = True) -> AsyncIterator[Rig]:
    clock = FakeClock(START + 3 * 60)
    async with secure.root_etcd([endpoint]) as etcd:
        state = State(etcd, Keys(prefix), SizeTable(), clock=clock)
        await etcd.put(state.keys.node(NODE.name), NODE.encode())
        await state.create_app("shop")
        if deployed:
            await state.create_release("shop", SLUG, {"web": "w"}, "", "t")
        yield Rig(etcd, state, Jobs(state, minute_seconds=60.0), clock)


async def test_a_job_runs_once_per_slot_on_the_current_release_and_stops_after_its_interval(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with rig(etcd_endpoint, etcd_prefix) as r:
        job = await r.jobs.create("shop", cron.schedule("10m"), "python3 tick.py", "", "ann")
        loop = r.loop()
        assert await loop.pass_once() == [], "the slot in progress at creation does not run"
        r.clock.advance(7 * 60)  # 10:10
        runs = await loop.pass_once()
        assert [run.dyno for run in runs] == ["scheduler.1"]
        assert await loop.pass_once() == [], "a slot runs once"
        (placed,) = await r.placements("shop")
        assert (placed.name, placed.type, placed.kind) == ("scheduler.1", "scheduler", "oneoff")
        current = (await r.state.get_release("shop")).version
        assert placed.command == "python3 tick.py" and placed.release == current
        assert placed.stop_after == 600.0 and placed.size == "standard-1x"

        r.clock.advance(10 * 60)  # 10:20
        await r.state.create_release("shop", SLUG, {"web": "w2"}, "", "t")
        runs = await loop.pass_once()
        assert [(run.dyno, run.release) for run in runs] == [("scheduler.2", current + 1)]
        (record,) = await r.jobs.of_app("shop")
        assert [run.dyno for run in record.recent_runs] == ["scheduler.1", "scheduler.2"]
        assert record.next_run_at(r.clock.now(), 60.0) == START + 30 * 60
        assert record.id == job.id


async def test_two_leaders_passing_at_once_run_a_slot_once(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with rig(etcd_endpoint, etcd_prefix) as r:
        for n in range(3):
            await r.jobs.create("shop", cron.schedule("10m"), f"echo {n}", "", "ann")
        r.clock.advance(7 * 60)
        loops = [r.loop("a"), r.loop("b"), r.loop("c")]
        results = await asyncio.gather(*(loop.pass_once() for loop in loops))
        started = [run for result in results for run in result]
        assert len(started) == 3
        placements = await r.placements("shop")
        assert sorted(p.command for p in placements) == ["echo 0", "echo 1", "echo 2"]
        assert sorted(p.name for p in placements) == ["scheduler.1", "scheduler.2", "scheduler.3"]
        for record in await r.jobs.of_app("shop"):
            assert len(record.recent_runs) == 1


async def test_an_app_without_a_release_skips_the_slot_and_says_why(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with rig(etcd_endpoint, etcd_prefix, deployed=False) as r:
        await r.jobs.create("shop", cron.schedule("10m"), "echo hi", "", "ann")
        r.clock.advance(7 * 60)
        assert await r.loop().pass_once() == []
        assert await r.placements("shop") == []
        (record,) = await r.jobs.of_app("shop")
        assert record.recent_runs == [] and record.next_run_at(r.clock.now(), 60.0) > r.clock.now()


async def test_no_room_waits_within_the_slot_and_runs_once_there_is(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with rig(etcd_endpoint, etcd_prefix) as r:
        await r.jobs.create("shop", cron.schedule("10m"), "echo big", "performance-l", "ann")
        r.clock.advance(7 * 60)
        loop = r.loop()
        assert await loop.pass_once() == []
        bigger = NodeRecord(
            name="node-b", address="127.0.0.2", capacity_mb=65536, stack="slipway-24"
        )
        await r.etcd.put(r.state.keys.node(bigger.name), bigger.encode())
        r.clock.advance(60)
        runs = await loop.pass_once()
        assert [run.dyno for run in runs] == ["scheduler.1"]
        (placed,) = await r.placements("shop")
        assert placed.node == "node-b"


async def test_bad_jobs_are_refused_and_app_destroy_takes_its_jobs(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with rig(etcd_endpoint, etcd_prefix) as r:
        with pytest.raises(errors.InvalidArgument, match="unknown dyno size"):
            await r.jobs.create("shop", cron.schedule("10m"), "echo", "huge-99x", "ann")
        with pytest.raises(errors.NotFound, match="not found"):
            await r.jobs.create("nope", cron.schedule("10m"), "echo", "", "ann")
        first = await r.jobs.create("shop", cron.schedule("1h", ":15"), "echo a", "", "ann")
        with pytest.raises(errors.NotFound, match="no scheduler job"):
            await r.jobs.remove("shop", "zzzz")
        removed = await r.jobs.remove("shop", first.id[:4])
        assert removed.id == first.id and await r.jobs.of_app("shop") == []
        await r.jobs.create("shop", cron.schedule("1d", "02:00"), "echo b", "", "ann")
        await r.state.destroy_app("shop", "shop")
        kvs, _ = await r.etcd.get_prefix(r.state.keys.scheduler_jobs())
        assert [kv for kv in kvs if b"/shop/" in kv.key] == []


async def test_a_run_still_going_after_its_interval_is_stopped_by_the_reaper(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with rig(etcd_endpoint, etcd_prefix) as r:
        await r.jobs.create("shop", cron.schedule("10m"), "sleep infinity", "", "ann")
        r.clock.advance(7 * 60)
        loop = r.loop()
        assert len(await loop.pass_once()) == 1
        leadership = loop.leadership
        reaper = Reaper(OneOffs(r.state, r.state.sizes, clock=r.clock), leadership)
        r.clock.advance(9 * 60)
        assert await reaper.reap_once() == []
        assert len(await r.placements("shop")) == 1
        r.clock.advance(60)
        (stopped,) = await reaper.reap_once()
        assert stopped.name == "scheduler.1"
        assert await r.placements("shop") == [], "the agent then stops the dyno"


async def test_a_detached_run_is_stopped_after_the_one_off_limit(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with rig(etcd_endpoint, etcd_prefix) as r:
        oneoffs = OneOffs(r.state, r.state.sizes, detached_max_seconds=3600.0, clock=r.clock)
        started = await oneoffs.start(RunRequest("shop", "sleep infinity", attach=False))
        assert started.placement.stop_after == 3600.0
        reaper = Reaper(oneoffs, r.loop().leadership)
        r.clock.advance(3599)
        assert await reaper.reap_once() == []
        r.clock.advance(1)
        (stopped,) = await reaper.reap_once()
        assert stopped.name == started.placement.name and await r.placements("shop") == []
