"""The route table: records, host lookup, puts and deletes, whole replacement."""

from __future__ import annotations

import json

import pytest

from router.config import Listen
from router.dataplane import snapshot
from router.table import RouteTable
from slipway.etcd import KV
from slipway.keys import Keys

K = Keys("/p")


def kv(key: bytes, obj: object) -> KV:
    return KV(key, json.dumps(obj).encode(), 1, 1)


def table() -> RouteTable:
    t = RouteTable(K, "Example.Test")
    t.replace(
        [
            kv(
                K.route_app("demo"),
                {"app": "demo", "web": 2, "released": True, "balance": "least-loaded"},
            ),
            kv(
                K.route_dyno("demo", "web.1"),
                {"app": "demo", "dyno": "web.1", "address": "10.0.0.1:5000"},
            ),
            kv(K.route_domain("www.demo.org"), {"app": "demo"}),
            kv(K.app("demo"), {"not": "a route"}),  # outside routes/: ignored
        ],
        revision=10,
    )
    return t


def test_replace_loads_apps_dynos_domains() -> None:
    t = table()
    assert t.loaded and t.revision == 10
    app = t.apps["demo"]
    assert (app.web, app.released, app.balance, app.maintenance) == (2, True, "least-loaded", False)
    (dyno,) = t.dyno_list["demo"]
    assert (dyno.name, dyno.host, dyno.port, dyno.address) == (
        "web.1",
        "10.0.0.1",
        5000,
        "10.0.0.1:5000",
    )


def test_every_name_an_app_answers_to() -> None:
    hosts = snapshot(table())
    assert {host: route[0] for host, route in hosts.items()} == {
        "demo.example.test": "demo",
        "www.demo.org": "demo",
    }


def test_put_and_delete_events() -> None:
    t = table()
    t.apply(
        "put",
        K.route_dyno("demo", "web.2"),
        json.dumps({"app": "demo", "dyno": "web.2", "address": "10.0.0.2:5000"}).encode(),
        11,
    )
    assert [d.name for d in t.dyno_list["demo"]] == ["web.1", "web.2"]
    t.apply("delete", K.route_dyno("demo", "web.1"), b"", 12)
    assert [d.name for d in t.dyno_list["demo"]] == ["web.2"]
    t.apply("delete", K.route_domain("www.demo.org"), b"", 13)
    assert "www.demo.org" not in snapshot(t)
    t.apply("put", K.route_app("demo"), json.dumps({"maintenance": True}).encode(), 14)
    assert t.apps["demo"].maintenance
    t.apply("delete", K.route_app("demo"), b"", 15)
    assert "demo" not in t.apps and t.revision == 15


def test_bad_records_are_skipped_not_fatal() -> None:
    t = table()
    t.apply("put", K.route_dyno("demo", "web.3"), b"{not json", 11)
    t.apply("put", K.route_dyno("demo", "web.4"), json.dumps({"address": "noport"}).encode(), 12)
    assert [d.name for d in t.dyno_list["demo"]] == ["web.1"]


def test_replace_swaps_everything() -> None:
    t = table()
    t.replace([kv(K.route_app("new"), {"released": True})], revision=20)
    assert set(t.apps) == {"new"} and t.dyno_list == {} and t.domains == {}


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("0.0.0.0:80", "0.0.0.0", 80),
        (":8080", "0.0.0.0", 8080),
        ("8080", "0.0.0.0", 8080),
        ("[::1]:443", "::1", 443),
    ],
)
def test_listen_parse(text: str, host: str, port: int) -> None:
    assert Listen.parse(text) == Listen(host, port)


def test_listen_parse_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        Listen.parse("host:http")
    with pytest.raises(ValueError):
        Listen.parse("host:70000")


def test_two_instances_of_one_dyno_name_during_a_rollout() -> None:
    # the key's last segment is an opaque instance id; the name comes from the JSON
    t = table()
    t.apply(
        "put",
        K.route_dyno("demo", "i-new"),
        json.dumps({"app": "demo", "dyno": "web.1", "address": "10.0.0.9:5000"}).encode(),
        11,
    )
    assert sorted((d.name, d.address) for d in t.dyno_list["demo"]) == [
        ("web.1", "10.0.0.1:5000"),
        ("web.1", "10.0.0.9:5000"),
    ]
    t.apply("delete", K.route_dyno("demo", "web.1"), b"", 12)
    assert [d.address for d in t.dyno_list["demo"]] == ["10.0.0.9:5000"]
