"""Leader loops on a fake clock against a real etcd: time limits and daily cycling
are checked by moving the clock, not by waiting for it.

The loops' single steps are driven by hand (ReleasePhase.step,
Reconciler.reconcile_once); agents are stood in for by the status records they
would write.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from controller.bus.buildbus import BuildBus
from controller.core.models import RELEASE_FAILED, RELEASE_PENDING, SlugInfo
from controller.core.scheduler import UP, Placement, cycle_deadline
from controller.core.sizes import SizeTable
from controller.core.transitions import ScaleChange
from controller.loops.leader import Leadership
from controller.loops.reconciler import Reconciler
from controller.loops.release_phase import ReleasePhase
from controller.store.build_records import BuildStore
from controller.store.state import State
from slipway.clock import FakeClock
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.records import NodeRecord, StatusRecord
from tests.harness import secure

pytestmark = pytest.mark.integration

SLUG = SlugInfo(digest="ab" * 32, size_bytes=10, stack="slipway-24")
NODE = NodeRecord(name="node-a", address="127.0.0.1", capacity_mb=4096)


@contextlib.asynccontextmanager
async def pending_release(
    endpoint: str, prefix: str, app: str
) -> AsyncIterator[tuple[Etcd, State, ReleasePhase, FakeClock]]:
    """An app whose v2 waits for its release command, and a release phase on a fake clock."""
    clock = FakeClock()
    async with secure.root_etcd([endpoint]) as etcd:
        state = State(etcd, Keys(prefix), SizeTable(), clock=clock)
        phase = ReleasePhase(
            state,
            BuildStore(state.etcd, state.keys),
            BuildBus(["nats://127.0.0.1:1"]),  # never connected: its log lines are best effort
            SizeTable(),
            timeout=60.0,
            place_timeout=30.0,
            clock=clock,
        )
        await state.create_app(app)
        await state.create_release(app, SLUG, {"web": "w"}, "", "t", release_command="m")
        yield etcd, state, phase, clock


async def test_a_release_command_past_its_time_limit_fails_the_release(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with pending_release(etcd_endpoint, etcd_prefix, "slow") as (etcd, state, phase, clock):
        keys = state.keys
        await etcd.put(keys.node(NODE.name), NODE.encode())

        await phase.step(await state.get_app("slow"), 2)  # places release.2
        placed = await state.get_release("slow", 2)
        assert placed.phase_instance and placed.phase_started_at == clock.now()
        await phase.step(await state.get_app("slow"), 2)
        assert (await state.get_release("slow", 2)).status == RELEASE_PENDING

        clock.advance(59)
        await phase.step(await state.get_app("slow"), 2)
        assert (await state.get_release("slow", 2)).status == RELEASE_PENDING, "within its limit"

        clock.advance(2)
        await phase.step(await state.get_app("slow"), 2)
        failed = await state.get_release("slow", 2)
        assert failed.status == RELEASE_FAILED
        assert failed.error == "release command ran longer than 60 s"
        app = await state.get_app("slow")
        assert (app.current_release, app.pending_releases) == (1, [])
        assert await etcd.get(keys.dyno("slow", placed.phase_instance)) is None


async def test_a_release_command_with_no_node_to_run_on_fails_after_the_place_limit(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with pending_release(etcd_endpoint, etcd_prefix, "nowhere") as (_, state, phase, clock):
        clock.advance(29)
        await phase.step(await state.get_app("nowhere"), 2)
        assert (await state.get_release("nowhere", 2)).status == RELEASE_PENDING

        clock.advance(2)
        await phase.step(await state.get_app("nowhere"), 2)
        failed = await state.get_release("nowhere", 2)
        assert failed.status == RELEASE_FAILED and "MB free for the release command" in failed.error
        assert (await state.get_app("nowhere")).pending_releases == []


async def placements(etcd: Etcd, keys: Keys, app: str) -> list[Placement]:
    kvs, _ = await etcd.get_prefix(keys.dynos(app))
    return [Placement.decode(kv.value) for kv in kvs]


async def report_up(etcd: Etcd, keys: Keys, p: Placement) -> None:
    """What the agent would write once the dyno runs."""
    status = StatusRecord(p.app, p.name, p.instance_id, p.node, p.type, p.release, UP)
    await etcd.put(keys.status(p.app, p.instance_id), status.encode())


async def test_a_dyno_is_cycled_when_the_clock_passes_its_deadline(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    clock = FakeClock()
    period = 24 * 3600.0
    async with secure.root_etcd([etcd_endpoint]) as etcd:
        keys = Keys(etcd_prefix)
        state = State(etcd, keys, SizeTable(), clock=clock)
        leadership = Leadership(etcd, keys, "me")
        await etcd.put(keys.leader(), b"me")  # the reconciler's writes compare this key
        leadership._set(True)
        reconciler = Reconciler(
            etcd, keys, SizeTable(), leadership, cycle_seconds=period, clock=clock
        )
        await etcd.put(keys.node(NODE.name), NODE.encode())
        await state.create_app("daily")
        await state.create_release("daily", SLUG, {"web": "w"}, "Deploy", "t")
        await state.scale("daily", [ScaleChange("web", 1)])

        await reconciler.reconcile_once()
        [first] = await placements(etcd, keys, "daily")
        assert first.created_at == clock.now()
        await report_up(etcd, keys, first)

        clock.advance(cycle_deadline(first, period) - clock.now() - 1)
        assert (await reconciler.reconcile_once()).empty, "not due yet: nothing changes"
        assert await placements(etcd, keys, "daily") == [first]

        clock.advance(2)
        result = await reconciler.reconcile_once()
        assert [p.instance_id for p in result.cycled] == [first.instance_id]
        both = await placements(etcd, keys, "daily")
        [fresh] = [p for p in both if p.instance_id != first.instance_id]
        assert len(both) == 2 and fresh.name == "web.1", "the replacement starts beside it"

        await report_up(etcd, keys, fresh)
        await reconciler.reconcile_once()
        assert await placements(etcd, keys, "daily") == [fresh], "the old one goes once it is up"
