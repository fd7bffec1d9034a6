"""The ``addongrants/{app}`` values: what the leader writes, what agents read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agent.addon_grants import GrantFollower, grants_from
from slipway import errors, records
from slipway.cni import AddonGrant
from slipway.etcd import KV
from slipway.keys import Keys

KEYS = Keys("/slipway")


def kv(app: str, value: bytes) -> KV:
    return KV(KEYS.addon_grant(app), value, 1, 1)


def test_value_round_trips_sorted_without_duplicates() -> None:
    value = records.addon_grants_value([("10.0.0.2", 5433), ("10.0.0.1", 6380), ("10.0.0.2", 5433)])
    assert value == b'[{"address":"10.0.0.1","port":6380},{"address":"10.0.0.2","port":5433}]'
    assert records.addon_grants_of(value) == [("10.0.0.1", 6380), ("10.0.0.2", 5433)]


def test_unreadable_items_open_nothing() -> None:
    assert records.addon_grants_of(b"not json") == []
    assert records.addon_grants_of(b'{"address": "10.0.0.1", "port": 1}') == []
    junk = b'[{"address": "10.0.0.1", "port": "5433"}, {"port": 0, "address": "a"}, 7]'
    assert records.addon_grants_of(junk) == []


def test_grants_from_names_each_app_by_its_key() -> None:
    kvs = [
        kv("shop", records.addon_grants_value([("10.0.0.2", 5433)])),
        kv("blog", records.addon_grants_value([("10.0.0.2", 5433), ("10.0.0.3", 6380)])),
        kv("broken", b"{"),
    ]
    assert grants_from(kvs, KEYS.addon_grants()) == (
        AddonGrant("blog", "10.0.0.2", 5433),
        AddonGrant("blog", "10.0.0.3", 6380),
        AddonGrant("shop", "10.0.0.2", 5433),
    )


class StalledEtcd:
    """Our etcd seam with a watch that never delivers, as a stalled stream does."""

    def __init__(self) -> None:
        self.kvs: list[KV] = []
        self.reads = 0
        self.read = asyncio.Event()

    async def get_prefix(self, prefix: bytes) -> tuple[list[KV], int]:
        self.reads += 1
        self.read.set()
        return list(self.kvs), 7

    async def until(self, condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
        """Wait, read by read, for ``condition`` to hold."""
        async with asyncio.timeout(timeout):
            while not condition():
                self.read.clear()
                await self.read.wait()

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> AsyncIterator[object]:
        await asyncio.Event().wait()
        yield None

    async def close(self) -> None:
        pass


async def follow(  # type: ignore[no-untyped-def]
    etcd: StalledEtcd, on_change, followers: list[GrantFollower] | None = None
) -> tuple[GrantFollower, asyncio.Task[None]]:
    async def connect() -> StalledEtcd:
        return etcd

    follower = GrantFollower(connect, KEYS, on_change, relist_interval=0.01)  # type: ignore[arg-type]
    if followers is not None:
        followers.append(follower)
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(follower.loaded.wait(), 5)
    return follower, task


async def test_a_grant_written_while_the_watch_is_stalled_is_applied_by_the_next_read() -> None:
    etcd = StalledEtcd()
    applied: list[tuple[AddonGrant, ...]] = []
    followers: list[GrantFollower] = []

    async def on_change() -> None:
        applied.append(followers[0].current)

    _, task = await follow(etcd, on_change, followers)
    try:
        etcd.kvs = [kv("shop", records.addon_grants_value([("10.0.0.2", 5433)]))]
        await etcd.until(lambda: applied and applied[-1] == (AddonGrant("shop", "10.0.0.2", 5433),))
        reads = etcd.reads
        await etcd.until(lambda: etcd.reads > reads + 3)
        assert len(applied) == 2  # unchanged reads do not rewrite the firewall
    finally:
        task.cancel()


async def test_a_failed_firewall_apply_is_tried_again_on_the_next_read() -> None:
    etcd = StalledEtcd()
    etcd.kvs = [kv("shop", records.addon_grants_value([("10.0.0.2", 5433)]))]
    calls: list[str] = []

    async def on_change() -> None:
        calls.append("apply")
        if len(calls) == 1:
            raise errors.FailedPrecondition("nft: resource busy")

    follower, task = await follow(etcd, on_change)
    try:
        await etcd.until(lambda: len(calls) >= 2 and follower.applied)
        assert follower.current == (AddonGrant("shop", "10.0.0.2", 5433),)
    finally:
        task.cancel()
