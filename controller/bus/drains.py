"""The drain pool: every controller sends some of the platform's log drains.

    etcd logdrains/{app}/{id} ──> DrainPool (each controller) ──claims──> drainowners/{id}
                                       │                                  (under its lease)
                                       └─ DrainWorker per owned drain
    LOGS stream ── durable consumer drain-{id} (logs.{app}) ──> worker ──> syslog / HTTPS

Ownership: each member keeps ``drainpool/{member}`` and the owner keys of the
drains it sends under one etcd lease. A member that dies stops refreshing it;
when the lease lapses its drains have no owner and the survivors take them on
their next pass (their fair share first, see ``core.drains.claims``).

Delivery is at least once. A message may hold several lines (a batch, see
:mod:`slipway.logline`); the worker acknowledges it once the sender confirmed
every one of them (or the worker dropped them, counted), each message on its
own (AckExplicit). A new owner restarts the consumer just after the
acknowledged floor (below it every message is acknowledged), so lines come in
order after a takeover, the unconfirmed ones again: a message sent in part
before the takeover is sent again whole, so its first lines may arrive twice.

While a receiver is down the worker keeps reading the app's lines into a
bounded buffer; past ``buffer_lines`` the oldest are dropped and counted, and
once the receiver takes lines again one ``L10`` line in the app's log says how
many were lost. Routers and dynos never wait for a drain: they publish to the
stream, whatever drains do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from controller.bus.drain_send import DeliveryError, Item, Sender, sender_for
from controller.bus.logs import LogHub
from controller.core.drains import DrainRecord, claims, l10_line, parse_url
from slipway import errors, logline
from slipway import log as slog
from slipway.aio import raise_if_cancelling
from slipway.backoff import Backoff
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.logline import LogLine

log = slog.get("controller.drains")

BATCH = 100
ACK_WAIT = 30.0
# Lines a sender may hold unconfirmed (syslog confirms a second after writing).
MAX_OUTSTANDING = 5000


class DrainWorker:
    """Sends one drain's lines until cancelled."""

    def __init__(
        self,
        record: DrainRecord,
        js: JetStreamContext,
        sender: Sender,
        *,
        buffer_lines: int = logline.MAX_LINES_PER_APP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.record = record
        self.js = js
        self.sender = sender
        self.buffer_lines = buffer_lines
        self.clock = clock
        self.buffer: deque[Item] = deque()
        self.highest = 0  # the last stream sequence read (redeliveries are at or below it)
        self.dropped = 0
        self.dropped_since = 0.0
        self.delivered = 0
        self.errors = 0
        self.failing = False  # the last delivery failed
        # Messages read and not yet acknowledged, by stream sequence, with how many
        # of their lines are neither confirmed by the sender nor dropped.
        self._msgs: dict[int, tuple[Msg, int]] = {}

    async def _consumer_start(self) -> int:
        """Where to (re)start: just after what was acknowledged, or after ``start_after``."""
        name = self.record.consumer
        try:
            info = await self.js.consumer_info(logline.STREAM, name)
        except nats.js.errors.NotFoundError:
            return self.record.start_after + 1
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        # Recreated so that lines handed out to a dead owner come again first, in
        # order; those of a message it confirmed in part too (at least once).
        await self.js.delete_consumer(logline.STREAM, name)
        return max(floor, self.record.start_after) + 1

    async def _subscribe(self) -> object:
        start = await self._consumer_start()
        config = nats.js.api.ConsumerConfig(
            durable_name=self.record.consumer,
            filter_subject=logline.app_filter(self.record.app),
            deliver_policy=nats.js.api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            # Not AckAll: a message dropped while the receiver is away would then
            # also acknowledge the earlier ones the sender still holds unconfirmed.
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_deliver=-1,
            max_ack_pending=self.buffer_lines + MAX_OUTSTANDING + 4 * BATCH,
        )
        await self.js.add_consumer(logline.STREAM, config)
        self.highest = start - 1
        return await self.js.pull_subscribe_bind(self.record.consumer, stream=logline.STREAM)

    async def run(self) -> None:
        sub = await self._subscribe()
        backoff = Backoff(initial=0.2, maximum=10.0)
        retry_at = 0.0
        try:
            while True:
                if self._may_read():
                    await self._read(sub, wait=0.2 if self.buffer else 1.0)
                elif self.sender.outstanding() >= MAX_OUTSTANDING:
                    await asyncio.sleep(0.05)  # nothing to do until the sender confirms
                now = time.monotonic()
                if now < retry_at:
                    await self._confirm(self.sender.confirmed())
                    await asyncio.sleep(min(0.2, retry_at - now))
                    continue
                try:
                    await self._deliver()
                except DeliveryError as exc:
                    self.errors += 1
                    delay = backoff.next()
                    retry_at = time.monotonic() + delay
                    log.warning(
                        "drain delivery failed",
                        app=self.record.app,
                        drain=self.record.token,
                        error=str(exc),
                        retry_in=round(delay, 1),
                    )
                    continue
                backoff.reset()
                if self.dropped:
                    await self._report_dropped()  # the receiver takes lines again
        finally:
            with contextlib.suppress(Exception):
                await self.sender.close()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]

    def _may_read(self) -> bool:
        """Whether to fetch more messages now. The consumer's ack window bounds the
        messages held, but a batch holds many lines: the buffer is bounded in lines
        too (the rest waits in the stream), except while the receiver is away, when
        reading on keeps the newest lines (see the overflow rule in :meth:`_read`)."""
        return self.failing or len(self.buffer) < self.buffer_lines + MAX_OUTSTANDING

    async def _read(self, sub: object, wait: float) -> None:
        try:
            msgs = await sub.fetch(BATCH, timeout=wait)  # type: ignore[attr-defined]
        except (TimeoutError, nats.errors.TimeoutError):
            raise_if_cancelling()
            return
        raise_if_cancelling()
        for msg in msgs:
            seq = int(msg.metadata.sequence.stream)
            if seq <= self.highest:
                continue  # redelivered while we held it: already buffered or sent
            self.highest = seq
            lines = logline.decode_batch(msg.data, msg.subject)
            if not lines:
                # Said in its place, so a receiver sees that something was there;
                # an unreadable line among readable ones is skipped, as readers do.
                lines = [LogLine(self.record.app, "heroku", "logplex", "(unreadable line)", 0.0)]
            self._msgs[seq] = (msg, len(lines))
            self.buffer.extend((seq, line) for line in lines)
        # Lines waiting for a receiver that is away: the newest buffer_lines are
        # kept, as the stream itself keeps an app's newest lines. (A receiver that
        # takes lines is not dropped for: reading waits for it, see _may_read.)
        over = len(self.buffer) - self.buffer_lines
        if over > 0 and self.failing:
            dropped = [self.buffer.popleft()[0] for _ in range(over)]
            self.dropped += len(dropped)
            self.dropped_since = self.dropped_since or self.clock()
            await self._settle(dropped)

    async def _deliver(self) -> None:
        if not self.buffer and not self.sender.outstanding():
            return
        # While the receiver fails, only what the sender holds is tried again:
        # the rest waits in the buffer, where the overflow rule applies.
        room = 0 if self.failing else max(0, MAX_OUTSTANDING - self.sender.outstanding())
        take = [self.buffer.popleft() for _ in range(min(BATCH, len(self.buffer), room))]
        try:
            confirmed = await self.sender.send(take)
        except DeliveryError:
            self.failing = True
            raise
        self.failing = False
        await self._confirm(confirmed)

    async def _confirm(self, seqs: list[int]) -> None:
        self.delivered += len(seqs)
        await self._settle(seqs)

    async def _settle(self, seqs: list[int]) -> None:
        """``seqs`` has one entry per line the sender confirmed or the worker dropped
        (each line once: see :class:`Sender`); a message is acknowledged once none
        of its lines is left."""
        for seq in seqs:
            entry = self._msgs.get(seq)
            if entry is None:
                continue
            msg, left = entry
            if left > 1:
                self._msgs[seq] = (msg, left - 1)
                continue
            del self._msgs[seq]
            await msg.ack()

    async def _report_dropped(self) -> None:
        line = l10_line(self.record.app, self.dropped, self.dropped_since)
        await self.js.publish(
            logline.subject(self.record.app, logline.Origin.CONTROLLER), line.encode()
        )
        log.warning(
            "drain dropped lines",
            app=self.record.app,
            drain=self.record.token,
            dropped=self.dropped,
        )
        self.dropped = 0
        self.dropped_since = 0.0


class DrainPool:
    """This controller's share of the drains (see the module doc)."""

    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        log_hub: LogHub,
        member: str,
        *,
        ttl: int = 5,
        interval: float = 1.0,
        ca_file: str = "",
        buffer_lines: int = logline.MAX_LINES_PER_APP,
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.log_hub = log_hub
        self.member = member
        self.ttl = ttl
        self.interval = interval
        self.ca_file = ca_file
        self.buffer_lines = buffer_lines
        self.workers: dict[str, tuple[DrainWorker, asyncio.Task[None]]] = {}

    async def run(self) -> None:
        await self.log_hub.connected.wait()
        backoff = Backoff(initial=0.5, maximum=5.0)
        while True:
            try:
                await self._serve()
            except errors.SlipwayError as exc:
                log.warning("drain pool lost etcd; its drains go to others", error=str(exc))
            finally:
                await self._stop_all()
            await asyncio.sleep(backoff.next())

    async def _serve(self) -> None:
        lease = await self.etcd.lease(self.ttl)
        await self.etcd.put(self.keys.drain_member(self.member), b"{}", lease=lease.id)
        try:
            while True:
                if await self.etcd.refresh_lease(lease.id) <= 0:
                    raise errors.Unavailable("the drain pool's lease expired")
                await self._pass(lease.id)
                await asyncio.sleep(self.interval)
        finally:
            with contextlib.suppress(Exception):
                await self.etcd.revoke_lease(lease.id)

    async def _pass(self, lease_id: int) -> None:
        kvs, _ = await self.etcd.get_prefix(self.keys.log_drains())
        drains = {d.id: d for d in (DrainRecord.decode(kv.value) for kv in kvs)}
        owner_kvs, _ = await self.etcd.get_prefix(self.keys.drain_owners())
        head = len(self.keys.drain_owners())
        owners = {kv.key[head:].decode(): kv.value.decode() for kv in owner_kvs}
        members, _ = await self.etcd.get_prefix(self.keys.drain_members())

        for drain_id in list(self.workers):
            gone = drain_id not in drains
            if gone or owners.get(drain_id) != self.member:
                await self._stop(drain_id, delete_consumer=gone)
        for drain_id, (_, task) in list(self.workers.items()):
            if task.done():  # it failed: logged by _supervise; start it afresh
                del self.workers[drain_id]
                self._start(drains[drain_id])
        for drain_id in claims(sorted(drains), owners, self.member, len(members)):
            key = self.keys.drain_owner(drain_id)
            if await self.etcd.create(key, self.member.encode(), lease=lease_id):
                self._start(drains[drain_id])
        for drain_id, owner in owners.items():
            if owner == self.member and drain_id in drains and drain_id not in self.workers:
                self._start(drains[drain_id])  # ours from before a restart of this pass

    def _start(self, record: DrainRecord) -> None:
        sender = sender_for(parse_url(record.url), record.token, self.ca_file)
        worker = DrainWorker(
            record, self.log_hub.nc.jetstream(), sender, buffer_lines=self.buffer_lines
        )
        task = asyncio.create_task(self._supervise(worker), name=f"drain-{record.id}")
        self.workers[record.id] = (worker, task)
        log.info("drain started", app=record.app, drain=record.token)

    async def _supervise(self, worker: DrainWorker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("drain worker failed", app=worker.record.app, drain=worker.record.token)
            await asyncio.sleep(1.0)

    async def _stop(self, drain_id: str, *, delete_consumer: bool) -> None:
        worker, task = self.workers.pop(drain_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if delete_consumer:
            with contextlib.suppress(Exception):
                await worker.js.delete_consumer(logline.STREAM, worker.record.consumer)
            with contextlib.suppress(Exception):
                await self.etcd.delete(self.keys.drain_owner(drain_id))
            log.info("drain removed", app=worker.record.app, drain=worker.record.token)

    async def _stop_all(self) -> None:
        for drain_id in list(self.workers):
            await self._stop(drain_id, delete_consumer=False)
