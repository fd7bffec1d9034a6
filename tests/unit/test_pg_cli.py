"""Which database a pg:* command means, and what pg:info shows of it."""

from __future__ import annotations

import pytest

from controller.core.addons import action_argument, action_name
from slipway import errors
from slipway.cli.pg import backup_rows, choose, info_lines
from slipway.v1 import platform_pb2 as pb


def addon(name: str, *attached: tuple[str, str]) -> pb.Addon:
    return pb.Addon(
        name=name,
        service="postgresql",
        plan="essential-0",
        attachments=[pb.AddonAttachment(app=app, name=as_name) for app, as_name in attached],
    )


def test_database_is_named_by_attachment_url_or_addon_name() -> None:
    main = addon("postgresql-a-1", ("shop", "DATABASE"))
    red = addon("postgresql-b-2", ("shop", "HEROKU_POSTGRESQL_RED"), ("blog", "DATABASE"))
    both = [main, red]
    assert choose(both, "shop", "") is main  # attached as DATABASE
    assert choose(both, "shop", "HEROKU_POSTGRESQL_RED_URL") is red
    assert choose(both, "shop", "HEROKU_POSTGRESQL_RED") is red
    assert choose(both, "shop", "postgresql-b-2") is red
    with pytest.raises(errors.NotFound, match="it has DATABASE_URL, HEROKU_POSTGRESQL_RED_URL"):
        choose(both, "shop", "OTHER")


def test_no_database_or_an_ambiguous_one_says_what_to_do() -> None:
    with pytest.raises(errors.NotFound, match="addons:create postgresql -a shop"):
        choose([], "shop", "")
    one = addon("postgresql-a-1", ("shop", "HEROKU_POSTGRESQL_RED"))
    assert choose([one], "shop", "") is one
    two = [one, addon("postgresql-b-2", ("shop", "HEROKU_POSTGRESQL_BLUE"))]
    with pytest.raises(errors.FailedPrecondition, match="several postgresql add-ons"):
        choose(two, "shop", "")


def test_info_lines_show_use_against_the_plan() -> None:
    details = {
        "plan_description": "20 connections, 1 GB",
        "data_size_bytes": 8 * 1024 * 1024,
        "storage_limit_bytes": 1024**3,
        "connections": 3,
        "connection_limit": 20,
        "tables": 2,
        "version": "15.8",
        "read_only": False,
    }
    rows = dict(info_lines(addon("postgresql-a-1"), details))
    assert rows["Plan"] == "essential-0 (20 connections, 1 GB)"
    assert rows["Connections"] == "3/20"
    assert rows["Data Size"] == "8.0 MB / 1.0 GB (0.78%)"
    assert rows["Status"] == "Available"
    assert rows["Tables"] == "2" and rows["PG Version"] == "15.8"
    full = dict(info_lines(addon("postgresql-a-1"), {**details, "read_only": True}))
    assert full["Status"].startswith("Read-only")


def test_action_names_are_checked_before_they_reach_a_url() -> None:
    assert action_name("rotate-credentials") == "rotate-credentials"
    for bad in ("", "Reset", "../x", "a" * 41, "reset?x=1"):
        with pytest.raises(errors.InvalidArgument):
            action_name(bad)


def test_backups_are_listed_newest_first_with_their_database() -> None:
    db = addon("postgresql-a-1", ("shop", "DATABASE"), ("blog", "SHOP_DB"))
    details = {
        "backups": [
            {"id": "b001", "created_at": 1_790_000_000.0, "size_bytes": 2048},
            {"id": "b002", "created_at": 1_790_000_600.0, "size_bytes": 3 * 1024 * 1024},
            {"id": "b003", "created_at": 1_790_000_900.0, "size_bytes": 0, "state": "running"},
            {"id": "b004", "created_at": 1_790_001_000.0, "state": "failed", "error": "disk"},
        ]
    }
    rows = backup_rows(db, "shop", details)
    assert [r[0] for r in rows] == ["b004", "b003", "b002", "b001"]
    assert [r[2] for r in rows] == ["Failed: disk", "Running", "Completed", "Completed"]
    assert rows[2][3] == "3.0 MB" and rows[3][3] == "2 kB" and rows[1][3] == "-"
    assert rows[0][4] == "DATABASE_URL"  # the other app's name for it is not shown
    assert backup_rows(db, "shop", {}) == []


def test_an_action_argument_is_a_short_plain_word() -> None:
    assert action_argument("b003") == "b003"
    assert action_argument("") == ""
    for bad in ("../b001", "b 1", "x" * 65):
        with pytest.raises(errors.InvalidArgument, match="invalid add-on action argument"):
            action_argument(bad)


def test_pg_info_says_when_a_restore_runs_or_failed() -> None:
    db = addon("postgresql-a-1", ("shop", "DATABASE"))
    running = dict(info_lines(db, {"restore": {"backup": "b002", "state": "running"}}))
    assert running["Status"] == "Restoring b002"
    failed = {"restore": {"backup": "b002", "state": "failed", "error": "disk full"}}
    assert "b002, failed: disk full" in dict(info_lines(db, failed))["Status"]
    done = {"restore": {"backup": "b002", "state": "completed"}}
    assert dict(info_lines(db, done))["Status"] == "Available"
