"""Dyno environment, command and names: pure functions."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import click
import pytest

from agent.__main__ import _port_range, _timings
from agent.model import DynoSpec
from agent.sandbox import container_id, dyno_env, launch_args, memory_limit_bytes


def spec(name: str = "web.1", env: dict[str, str] | None = None, **kw: object) -> DynoSpec:
    return DynoSpec(
        app="my-app",
        name=name,
        process_type=name.split(".")[0],
        release=3,
        command="bundle exec puma",
        env=env or {},
        instance_id="abc/123-XYZ_long-id",
        **kw,
    )  # type: ignore[arg-type]


def test_web_env_config_vars_and_platform_names() -> None:
    env = dyno_env(
        spec(env={"GREETING": "hi", "PORT": "1", "DYNO": "x", "HOME": "/x"}),
        port=20001,
        path="/usr/bin",
    )
    assert env["GREETING"] == "hi"
    assert env["PORT"] == "20001"  # the platform's names win over config vars
    assert env["DYNO"] == "web.1"
    assert env["HOME"] == "/app"
    assert env["PATH"] == "/usr/bin"


def test_config_may_override_path_and_lang() -> None:
    env = dyno_env(
        spec(env={"PATH": "/app/bin:/usr/bin", "LANG": "en_US.UTF-8"}), port=1, path="/usr/bin"
    )
    assert env["PATH"] == "/app/bin:/usr/bin"
    assert env["LANG"] == "en_US.UTF-8"


def test_workers_get_no_port() -> None:
    env = dyno_env(spec("worker.2", env={"PORT": "99"}), port=0, path="/usr/bin")
    assert "PORT" not in env
    assert env["DYNO"] == "worker.2"


def test_launch_sources_profile_d_and_runs_the_command_as_a_child() -> None:
    args = launch_args("bundle exec puma -p $PORT")
    assert args[:2] == ("/bin/bash", "-c")
    script = args[2]
    assert "/app/.profile.d/*.sh" in script
    assert 'eval "$1"' in script and "exec" not in script
    assert args[-1] == "bundle exec puma -p $PORT"


def test_container_id_is_runc_safe_and_unique_per_instance() -> None:
    cid = container_id("slipway", spec())
    digest = hashlib.sha256(b"abc/123-XYZ_long-id").hexdigest()[:12]
    assert cid == f"slipway.my-app.web.1.{digest}"
    other = container_id("slipway", replace(spec(), instance_id="abc/123-XYZ_long-id2"))
    assert other != cid


def test_memory_limit_is_quota_times_factor() -> None:
    assert memory_limit_bytes(512, 2.0) == 1024 * 1024 * 1024


def test_cli_port_range_and_timings() -> None:
    assert _port_range("20000-20099") == (20000, 20099)
    for bad in ("20000", "9-10", "30000-20000", "a-b"):
        with pytest.raises(click.BadParameter):
            _port_range(bad)
    t = _timings('{"stop_grace": 2, "restart": {"cap": 8}}')
    assert t.stop_grace == 2 and t.restart.cap == 8 and t.boot_timeout == 60
    with pytest.raises(click.BadParameter):
        _timings('{"nope": 1}')
