from __future__ import annotations

import json

from controller.core.models import AppRecord, FormationItem, ReleaseRecord, SlugInfo
from controller.core.transitions import describe_config_change, merge_formation, route_record


def test_release_descriptions_follow_heroku() -> None:
    assert describe_config_change(["A", "B"], []) == "Set A, B config vars"
    assert describe_config_change([], ["FOO"]) == "Unset FOO config vars"
    assert describe_config_change(["A"], ["B"]) == "Set A config vars and Unset B config vars"


def test_merge_formation_gives_new_types_an_entry() -> None:
    existing = {"web": FormationItem(3, "standard-2x")}
    merged = merge_formation(existing, {"web": "x", "worker": "y", "release": "z"})
    assert merged == {
        "web": FormationItem(3, "standard-2x"),
        "worker": FormationItem(0, "standard-1x"),
    }
    fresh = merge_formation({}, {"web": "x"})
    assert fresh == {"web": FormationItem(1, "standard-1x")}, "web starts at one dyno, like Heroku"


def test_route_record_for_routers() -> None:
    app = AppRecord(name="demo", id="1", created_at=0, current_release=2, maintenance=True)
    record = json.loads(
        route_record(app, {"web": FormationItem(2, "standard-1x")}, crashed=True, released=True)
    )
    assert record == {
        "app": "demo",
        "web": 2,
        "released": True,
        "maintenance": True,
        "crashed": True,
        "balance": "random",
    }
    empty = json.loads(route_record(app, {}, crashed=False, released=False))
    assert empty["web"] == 0 and empty["released"] is False


def test_records_round_trip_through_json() -> None:
    release = ReleaseRecord(
        app="demo",
        version=3,
        description="Deploy abc",
        created_at=1.5,
        config={"A": "1"},
        slug=SlugInfo(digest="d" * 64, size_bytes=42, stack="slipway-24"),
        process_types={"web": "w"},
    )
    assert ReleaseRecord.decode(release.encode()) == release
    app = AppRecord(name="demo", id="x", created_at=2.0, release_seq=3, current_release=3)
    assert AppRecord.decode(app.encode()) == app
