"""What the control plane hands the native data plane: route snapshots and pages."""

from __future__ import annotations

import json

from router.dataplane import PAGE_KEYS, rendered_pages, snapshot
from router.table import RouteTable
from slipway.etcd import KV
from slipway.keys import Keys

K = Keys("/p")


def kv(key: bytes, obj: object) -> KV:
    return KV(key, json.dumps(obj).encode(), 1, 1)


def test_snapshot_names_every_host_an_app_answers_to() -> None:
    t = RouteTable(K, "Example.Test")
    t.replace(
        [
            kv(K.route_app("demo"), {"app": "demo", "web": 2, "released": True}),
            kv(K.route_dyno("demo", "web.1"), {"dyno": "web.1", "address": "10.0.0.1:5000"}),
            kv(K.route_dyno("demo", "web.2"), {"dyno": "web.2", "address": "[fd00::2]:5001"}),
            kv(K.route_app("idle"), {"app": "idle", "web": 0}),
            kv(K.route_domain("www.demo.org"), {"app": "demo"}),
            kv(K.route_domain("orphan.org"), {"app": "gone"}),
        ],
        revision=3,
    )
    routes = snapshot(t)
    dynos = [("10.0.0.1:5000", "web.1"), ("[fd00::2]:5001", "web.2")]
    demo = ("demo", 2, True, False, False, False, dynos)
    assert routes == {
        "demo.example.test": demo,
        "www.demo.org": demo,
        # known, no dynos wanted: H14, not "no such app"; not released: H81
        "idle.example.test": ("idle", 0, False, False, False, False, []),
    }


def test_snapshot_carries_the_app_flags() -> None:
    t = RouteTable(K, "example.test")
    record = {"web": 1, "released": True, "maintenance": True, "crashed": True}
    t.replace([kv(K.route_app("flags"), {**record, "balance": "least-loaded"})], revision=1)
    assert snapshot(t)["flags.example.test"] == ("flags", 1, True, True, True, True, [])


def test_pages_are_whole_responses_in_both_connection_modes() -> None:
    got = rendered_pages()
    assert set(got) == set(PAGE_KEYS)
    code, desc, status, keep, close = got["H14"]
    assert (code, desc, status) == ("H14", "No web processes running", 503)
    assert keep.startswith(b"HTTP/1.1 503 ") and b"Connection: keep-alive" in keep
    assert b"Connection: close" in close and b"H14" in close.split(b"\r\n\r\n", 1)[1]
    assert got["no_such_app"][:3] == ("", "No such app", 404)
