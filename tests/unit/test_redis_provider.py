"""The Redis provider's pure parts: its config, its ports, its admin protocol."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from slipway import errors
from slipway.providers.manifest import port_range
from slipway.providers.redis import (
    PLANS,
    ReplyError,
    choose_port,
    config_text,
    encode_command,
    parse_info,
    read_reply,
)
from slipway.providers.resources import Resource


def resource(**data: object) -> Resource:
    base = {"port": 6381, "password": "app-secret", "admin_password": "admin-secret"}
    return Resource(uuid="u", service="redis", plan="mini", data={**base, **data})


def test_config_holds_the_plan_tls_and_only_hashes_of_the_passwords() -> None:
    text = config_text(
        resource=resource(), plan=PLANS[0], address="192.0.2.2", folder=Path("/r/u"), with_tls=True
    )
    lines = text.splitlines()
    assert "port 0" in lines and "tls-port 6381" in lines and "bind 192.0.2.2" in lines
    assert "maxmemory 26214400" in lines and "maxclients 22" in lines
    assert "maxmemory-policy noeviction" in lines and "appendonly yes" in lines
    assert "app-secret" not in text and "admin-secret" not in text
    digest = hashlib.sha256(b"app-secret").hexdigest()
    assert f"user default on #{digest} ~* &* +@all -@admin" in lines


def test_a_policy_not_redis_has_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="allkeys-lru"):
        config_text(
            resource=resource(policy="keep-everything"),
            plan=PLANS[0],
            address="192.0.2.2",
            folder=Path("/r/u"),
            with_tls=True,
        )


def test_ports_are_the_lowest_free_one_and_run_out_clearly() -> None:
    assert choose_port([6380, 6382], (6380, 6384), lambda p: p != 6381) == 6383
    with pytest.raises(errors.ResourceExhausted, match="6380-6381"):
        choose_port([6380], (6380, 6381), lambda p: False)
    assert port_range("6380-6479") == (6380, 6479)
    assert port_range("7000") == (7000, 7000)
    for bad in ("6479-6380", "a-b", "0-10", "70000"):
        with pytest.raises(errors.InvalidArgument):
            port_range(bad)


def test_commands_encode_as_resp_arrays() -> None:
    assert encode_command(["CONFIG", "SET", "maxmemory", 1024]) == (
        b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$9\r\nmaxmemory\r\n$4\r\n1024\r\n"
    )


async def replies(raw: bytes, count: int) -> list[object]:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    return [await read_reply(reader) for _ in range(count)]


async def test_replies_of_each_kind_are_read() -> None:
    raw = b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n"
    assert await replies(raw, 5) == ["OK", 42, "hello", None, ["a", 1]]
    with pytest.raises(ReplyError, match="NOPERM"):
        await replies(b"-NOPERM this user has no permissions\r\n", 1)
    with pytest.raises(errors.Unavailable):
        await replies(b"", 1)


def test_info_sections_become_one_mapping() -> None:
    text = "# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nused_memory:1024\r\n"
    assert parse_info(text) == {"redis_version": "7.0.15", "used_memory": "1024"}
