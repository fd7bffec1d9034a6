"""A job whose every attempt dies is reported failed once and removed from the queue.

The test plays the builders that die: it pulls the job from the real consumer
and never acknowledges it, max_deliver times. The server's max-deliveries
advisory then reaches the pool's watcher, which publishes `failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import nats.errors
import pytest

from builder import jobs
from slipway import buildproto as protocol
from tests.harness import secure
from tests.harness.wait import eventually_async

pytestmark = pytest.mark.integration


async def test_exhausted_job_reported_failed(tmp_path: Path) -> None:
    server = secure.nats_engine(tmp_path / "nats")
    server.start()
    nc = await secure.nats_connect([f"nats://{server.host}:{server.port}"], name="exhausted-test")
    watcher: asyncio.Task[None] | None = None
    try:
        js = nc.jetstream()
        await jobs.ensure_consumer(js, jobs.QueueSettings(ack_wait=1, max_deliver=2))
        watcher = asyncio.create_task(jobs.fail_exhausted_jobs(nc, "watcher"))
        build_id = f"b-{uuid.uuid4().hex[:12]}"
        statuses: list[protocol.BuildStatus] = []

        async def on_status(msg) -> None:  # type: ignore[no-untyped-def]
            statuses.append(protocol.BuildStatus.decode(msg.data))

        await nc.subscribe(protocol.status_subject(build_id), cb=on_status)
        await protocol.submit(js, protocol.BuildJob(build_id, "doomed", "src-x"))

        sub = await js.pull_subscribe_bind(durable=protocol.CONSUMER, stream=protocol.STREAM)
        deliveries: list[int] = []

        async def delivered_again() -> bool:
            with contextlib.suppress(nats.errors.TimeoutError):
                for msg in await sub.fetch(1, timeout=0.5):
                    deliveries.append(msg.metadata.num_delivered or 0)  # and never acked
            return len(deliveries) == 2

        await eventually_async(delivered_again, timeout=20, interval=0.1)
        assert deliveries == [1, 2]

        async def reported() -> bool:
            # An idle builder keeps a pull waiting; the server notices the
            # exhausted job while serving pulls.
            with contextlib.suppress(nats.errors.TimeoutError):
                for msg in await sub.fetch(1, timeout=0.5):
                    deliveries.append(msg.metadata.num_delivered or 0)
            return any(s.status == protocol.FAILED for s in statuses)

        await eventually_async(reported, timeout=20, interval=0.1)
        assert len(statuses) == 1
        assert deliveries == [1, 2], "a job must not be delivered past max_deliver"
        assert statuses[0].attempt == 2 and statuses[0].builder == "watcher"
        assert "attempted 2 times" in (statuses[0].error or "")

        async def removed() -> bool:
            info = await js.stream_info(protocol.STREAM)
            return info.state.messages == 0

        await eventually_async(removed, timeout=10, interval=0.1)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await nc.close()
        server.stop()
