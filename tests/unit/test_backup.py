"""The backup format's pure parts: what is kept, round trips, damage, moving prefixes."""

from __future__ import annotations

import json

import pytest

from controller.store import backup
from slipway import errors
from slipway.etcd import KV
from slipway.keys import Keys

KEYS = Keys("/p")


def kv(key: bytes, value: bytes = b"{}", lease: int = 0) -> KV:
    return KV(key, value, 1, 1, lease)


def release(app: str, version: int, digest: str) -> KV:
    return kv(KEYS.release(app, version), json.dumps({"slug": {"digest": digest}}).encode())


def test_leased_keys_are_left_to_their_live_owners() -> None:
    state = [kv(KEYS.app("a")), kv(KEYS.node("n1"), lease=7), kv(KEYS.leader(), lease=9)]
    assert backup.kept(state) == [state[0]]


def test_state_round_trips_any_bytes() -> None:
    state = [kv(b"/p/apps/a", b'{"name":"a"}'), kv(b"/p/config/a", b"\x00\xff binary\n")]
    assert backup.decode_state(backup.encode_state(state)) == [(k.key, k.value) for k in state]


def test_a_damaged_line_is_named() -> None:
    data = backup.encode_state([kv(b"/p/apps/a")]) + b"{not json\n"
    with pytest.raises(errors.InvalidArgument, match="line 2 is damaged"):
        backup.decode_state(data)


def test_releases_name_their_slugs_and_apps_are_listed() -> None:
    pairs = [
        (k.key, k.value)
        for k in (
            kv(KEYS.app("shop")),
            release("shop", 1, ""),  # the initial release has no slug
            release("shop", 2, "ab" * 32),
            release("blog", 12, "cd" * 32),
            kv(KEYS.config("shop")),
        )
    ]
    assert backup.releases_slugs(KEYS, pairs) == {"shop v2": "ab" * 32, "blog v12": "cd" * 32}
    assert backup.app_names(KEYS, pairs) == ["shop"]


def test_restoring_under_another_prefix_moves_every_key() -> None:
    pairs = [(b"/old/apps/a", b"1"), (b"/old/config/a", b"2")]
    assert backup.moved(pairs, "/old", "/new/") == [
        (b"/new/apps/a", b"1"),
        (b"/new/config/a", b"2"),
    ]
    assert backup.moved(pairs, "/old", "/old") == pairs
