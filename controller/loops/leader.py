"""Leader election on etcd: one controller runs the scheduler, the rest stay warm.

The leader holds ``{prefix}/leader`` under a short lease it keeps alive. If it
dies, the lease expires and another controller takes the key within about one
TTL. A leader that cannot refresh its lease steps down at once, so two
controllers never both believe they lead for longer than the TTL.

Leader-only work runs under :meth:`Leadership.run_while_leading`: started when
this controller is elected, cancelled the moment leadership is lost, with one
backoff and logging policy for every loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slipway import errors
from slipway import log as slog
from slipway.aio import wait_set
from slipway.backoff import Backoff
from slipway.etcd import Etcd
from slipway.keys import Keys

log = slog.get("controller.leader")


class Leadership:
    def __init__(self, etcd: Etcd, keys: Keys, identity: str, *, ttl: int = 5) -> None:
        self.etcd = etcd
        self.keys = keys
        self.identity = identity
        self.ttl = ttl
        self._leader = False
        # Exactly one of these is set: elected while leading, lost otherwise.
        self.elected = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost.set()

    @property
    def is_leader(self) -> bool:
        return self._leader

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            log.info("leadership changed", leader=leader, identity=self.identity)
            if leader:
                self.lost.clear()
                self.elected.set()
            else:
                self.elected.clear()
                self.lost.set()

    async def run_while_leading(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        *,
        every: float | None = None,
        wake: asyncio.Event | None = None,
        ready: asyncio.Event | None = None,
        settle: float = 0.0,
    ) -> None:
        """Run ``step`` again and again while this controller leads; returns only when cancelled.

        Each time this controller is elected: wait for ``ready`` (when given,
        e.g. the NATS link), then call ``step``. After a step returns, wait until
        ``wake`` is set or ``every`` seconds pass (neither given: at once), then
        ``settle`` seconds more to collapse a burst of wake-ups, and step again.
        A step that raises is logged and retried after an exponential backoff;
        a step may also run forever (a consumer) and only end by raising.
        When leadership is lost, whatever runs is cancelled at once and the loop
        waits to be elected again. Cancellation is never swallowed.
        """
        while True:
            await self.elected.wait()
            await self._until_lost(self._steps(name, step, every, wake, ready, settle))

    async def _until_lost(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        lost = asyncio.create_task(self.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            task.cancel()
            # Let the work clean up; a cancellation of our own propagates after.
            await asyncio.wait({task})
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc

    async def _steps(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        every: float | None,
        wake: asyncio.Event | None,
        ready: asyncio.Event | None,
        settle: float,
    ) -> None:
        if ready is not None:
            await ready.wait()
        log.info("leader loop started", loop=name)
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            if wake is not None:
                wake.clear()
            try:
                await step()
            except Exception as exc:  # etcd, NATS (many kinds), or a bug: all retried
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # A library turned our cancellation into an error: do not lose it.
                    raise asyncio.CancelledError from exc
                if isinstance(exc, errors.SlipwayError):
                    log.warning("leader loop failed", loop=name, error=str(exc))
                else:
                    log.warning("leader loop failed", loop=name, error=repr(exc), exc_info=True)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            await _idle(wake, every)
            if settle:
                await asyncio.sleep(settle)

    async def current_leader(self) -> str:
        kv = await self.etcd.get(self.keys.leader())
        return kv.value.decode() if kv else ""

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=2.0)
        try:
            while True:
                try:
                    await self._campaign()
                    backoff.reset()
                except errors.SlipwayError as exc:
                    self._set(False)
                    log.warning("election error", error=str(exc))
                    await asyncio.sleep(backoff.next())
        finally:
            if self._leader:
                self._set(False)
                # Hand over at once instead of making the others wait a TTL.
                try:
                    await asyncio.wait_for(self._resign(), 2.0)
                except (TimeoutError, errors.SlipwayError):
                    pass

    async def _resign(self) -> None:
        kv = await self.etcd.get(self.keys.leader())
        if kv is not None and kv.value.decode() == self.identity:
            await self.etcd.delete(self.keys.leader())

    async def _campaign(self) -> None:
        lease = await self.etcd.lease(self.ttl)
        try:
            if not await self.etcd.create(
                self.keys.leader(), self.identity.encode(), lease=lease.id
            ):
                # Someone else leads: check again shortly.
                await asyncio.sleep(min(1.0, self.ttl / 4))
                return
            self._set(True)
            while True:
                await asyncio.sleep(self.ttl / 3)
                if await self.etcd.refresh_lease(lease.id) <= 0:
                    log.warning("leader lease lost", identity=self.identity)
                    self._set(False)
                    return
        finally:
            if not self._leader:
                try:
                    await asyncio.wait_for(self.etcd.revoke_lease(lease.id), 1.0)
                except (TimeoutError, errors.SlipwayError):
                    pass


async def _idle(wake: asyncio.Event | None, every: float | None) -> None:
    """Until ``wake`` is set or ``every`` seconds pass; at once when neither is given."""
    if wake is None:
        if every is not None:
            await asyncio.sleep(every)
    elif every is None:
        await wake.wait()
    else:
        with contextlib.suppress(TimeoutError):
            await wait_set(wake, every)
