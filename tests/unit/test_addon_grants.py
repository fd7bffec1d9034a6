"""The ``addongrants/{app}`` values: what the leader writes, what agents read."""

from __future__ import annotations

from agent.addon_grants import grants_from
from slipway import records
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
