"""Which add-on a redis:* command means, what redis:info shows, what redis:cli runs."""

from __future__ import annotations

import subprocess

import pytest

from slipway import errors
from slipway.cli.pg import choose
from slipway.cli.redis import cli_line, info_lines
from slipway.v1 import platform_pb2 as pb


def addon(name: str, *attached: tuple[str, str]) -> pb.Addon:
    return pb.Addon(
        name=name,
        service="redis",
        plan="mini",
        attachments=[pb.AddonAttachment(app=app, name=as_name) for app, as_name in attached],
    )


def test_the_redis_attachment_is_chosen_first_and_a_missing_one_says_how_to_make_it() -> None:
    cache = addon("redis-a-1", ("shop", "CACHE"))
    main = addon("redis-b-2", ("shop", "REDIS"))
    assert choose([cache, main], "shop", "", service="redis", default_attachment="REDIS") is main
    assert choose([cache, main], "shop", "CACHE_URL", service="redis") is cache
    with pytest.raises(errors.NotFound, match="addons:create redis -a shop"):
        choose([], "shop", "", service="redis", default_attachment="REDIS")


def test_info_shows_memory_against_the_plan_and_the_policy() -> None:
    details = {
        "plan_description": "25 MB, 20 connections",
        "memory_used_bytes": 5 * 1024 * 1024,
        "memory_limit_bytes": 25 * 1024 * 1024,
        "maxmemory_policy": "allkeys-lru",
        "connections": 3,
        "connection_limit": 20,
        "keys": 7,
        "version": "7.0.15",
    }
    rows = dict(info_lines(addon("redis-a-1"), details))
    assert rows["Plan"] == "mini (25 MB, 20 connections)"
    assert rows["Memory"] == "5.0 MB / 25.0 MB (20.0%)"
    assert rows["Maxmemory"] == "allkeys-lru" and rows["Connections"] == "3/20"
    assert rows["Keys"] == "7"


def test_the_cli_line_names_the_default_user_for_redis_cli() -> None:
    """What the one-off dyno's shell makes of the line (redis-cli replaced by echo)."""
    line = cli_line("REDIS_URL", "GET hits").replace("redis-cli", "echo", 1)
    done = subprocess.run(
        ["bash", "-c", line],
        env={"REDIS_URL": "rediss://:s3cret@192.0.2.2:6380"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [
        "--no-auth-warning",
        "--insecure",
        "-u",
        "rediss://default:s3cret@192.0.2.2:6380",
        "GET",
        "hits",
    ]
