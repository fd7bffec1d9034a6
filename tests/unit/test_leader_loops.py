"""Leadership.run_while_leading: leader-only loops start when elected, stop when leadership is lost.

The election itself needs etcd (tests/integration); here leadership is flipped
by hand through the same setter the campaign uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import pytest

from controller.loops.leader import Leadership
from slipway import errors
from slipway.etcd import Etcd
from slipway.keys import Keys
from tests.harness.wait import eventually_async

WAIT = 5.0  # generous bound for conditions on a loaded machine; never a timing assertion


def leadership() -> Leadership:
    return Leadership(cast(Etcd, None), Keys("/t"), "me")


async def until(predicate: Callable[[], bool]) -> None:
    await eventually_async(lambda: asyncio.sleep(0, predicate()), timeout=WAIT, interval=0.005)


async def test_steps_run_only_while_leading_and_stop_at_once_when_lost() -> None:
    lead = leadership()
    wake = asyncio.Event()
    steps: list[int] = []
    running = asyncio.Event()
    cancelled = asyncio.Event()

    async def step() -> None:
        steps.append(len(steps))
        if len(steps) == 3:  # the third step stays in flight until cancelled
            running.set()
            try:
                await asyncio.Future()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    loop = asyncio.create_task(lead.run_while_leading("t", step, wake=wake, every=3600))
    await asyncio.sleep(0.05)
    assert steps == [], "a follower runs nothing"

    lead._set(True)
    await until(lambda: len(steps) == 1)
    wake.set()  # a wake-up means another pass, without waiting for `every`
    await until(lambda: len(steps) == 2)
    wake.set()
    await running.wait()

    lead._set(False)
    async with asyncio.timeout(WAIT):
        await cancelled.wait()
    assert lead.lost.is_set() and not lead.elected.is_set()

    lead._set(True)  # elected again: a fresh start with a first pass at once
    await until(lambda: len(steps) == 4)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT):  # a swallowed cancellation would hang here
            await loop


async def test_a_failing_step_is_retried_and_others_keep_running() -> None:
    lead = leadership()
    lead._set(True)
    calls = {"bad": 0, "good": 0}

    async def bad() -> None:
        calls["bad"] += 1
        if calls["bad"] == 1:
            raise errors.Unavailable("etcd away")
        if calls["bad"] == 2:
            raise RuntimeError("a NATS error of some other kind")

    async def good() -> None:
        calls["good"] += 1

    tasks = [
        asyncio.create_task(lead.run_while_leading("bad", bad, every=3600)),
        asyncio.create_task(lead.run_while_leading("good", good, every=0.01)),
    ]
    await until(lambda: calls["bad"] == 3 and calls["good"] >= 3)
    assert all(not t.done() for t in tasks)
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_cancelling_the_runner_cancels_the_step_and_is_not_swallowed() -> None:
    lead = leadership()
    lead._set(True)
    started = asyncio.Event()
    cleaned = asyncio.Event()

    async def step() -> None:
        started.set()
        try:
            await asyncio.Future()
        finally:
            cleaned.set()

    loop = asyncio.create_task(lead.run_while_leading("t", step))
    await started.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT):  # a swallowed cancellation would hang here
            await loop
    assert cleaned.is_set(), "the step's clean-up ran before the runner returned"


async def test_a_cancellation_a_library_turned_into_an_error_still_stops_the_loop() -> None:
    lead = leadership()
    lead._set(True)
    started = asyncio.Event()

    async def step() -> None:
        started.set()
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            raise TimeoutError("what nats-py does with a cancellation") from None

    loop = asyncio.create_task(lead.run_while_leading("t", step))
    await started.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT):  # a swallowed cancellation would hang here
            await loop
