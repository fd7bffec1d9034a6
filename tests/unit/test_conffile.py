"""The shared daemon config loader: precedence, unknown keys, types, TOML shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from controller.config import ControllerConfig
from slipway import conffile, errors

seen: dict[str, Any] = {}


@click.command()
@conffile.config_option("DEMO_CONFIG", file_only=("sizes",))
@click.option("--listen", envvar="DEMO_LISTEN", default="127.0.0.1:1")
@click.option("--slots", type=int, default=1)
@click.option("--timeout", type=float, default=1.0)
@click.option("--servers", "server_list", default="a")
@click.option("--label", "labels", multiple=True)
@click.option("--timings", "timings_json", default="")
def demo(**values: Any) -> None:
    seen.clear()
    seen.update(values)
    seen["file_only"] = conffile.file_only_settings()


def run(tmp_path: Path, text: str | None, *args: str, env: dict[str, str] | None = None) -> Any:
    argv = list(args)
    if text is not None:
        path = tmp_path / "demo.toml"
        path.write_text(text)
        argv = ["--config", str(path), *argv]
    return CliRunner().invoke(demo, argv, env=env or {})


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    assert run(tmp_path, None).exit_code == 0
    assert seen["listen"] == "127.0.0.1:1"
    run(tmp_path, 'listen = "10.0.0.1:2"')
    assert seen["listen"] == "10.0.0.1:2"
    run(tmp_path, 'listen = "10.0.0.1:2"', env={"DEMO_LISTEN": "10.0.0.1:3"})
    assert seen["listen"] == "10.0.0.1:3"
    run(tmp_path, 'listen = "10.0.0.1:2"', "--listen", "10.0.0.1:4", env={"DEMO_LISTEN": "x"})
    assert seen["listen"] == "10.0.0.1:4"


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text("slots = 7\n")
    result = CliRunner().invoke(demo, [], env={"DEMO_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert seen["slots"] == 7


def test_unknown_keys_are_named_with_the_file(tmp_path: Path) -> None:
    result = run(tmp_path, "slot = 2\nlisten = 'x'\nzzz = 1\n")
    assert result.exit_code != 0
    assert "unknown settings in" in result.output
    assert "demo.toml" in result.output
    assert "slot, zzz" in result.output


def test_param_names_are_not_keys_only_long_flags(tmp_path: Path) -> None:
    # `--servers` stores into server_list; the file key is the flag's name.
    assert run(tmp_path, "server_list = 'b'").exit_code != 0
    assert run(tmp_path, "servers = 'b'").exit_code == 0
    assert seen["server_list"] == "b"


def test_wrong_types_name_the_key_and_file(tmp_path: Path) -> None:
    result = run(tmp_path, 'slots = "many"')
    assert result.exit_code != 0
    assert "demo.toml: slots" in result.output
    run(tmp_path, "timeout = 3")  # an int is a fine float
    assert seen["timeout"] == 3.0


def test_unreadable_toml_is_reported(tmp_path: Path) -> None:
    result = run(tmp_path, "listen = ")
    assert result.exit_code != 0
    assert "cannot read config" in result.output


def test_toml_shapes_become_flag_shapes(tmp_path: Path) -> None:
    run(
        tmp_path,
        'servers = ["n1:4222", "n2:4222"]\n'
        'label = { zone = "a", disk = "ssd" }\n'
        "timings = { stop_grace = 5, restart = { cap = 60 } }\n",
    )
    assert seen["server_list"] == "n1:4222,n2:4222"
    assert seen["labels"] == ("zone=a", "disk=ssd")
    assert seen["timings_json"] == '{"stop_grace": 5, "restart": {"cap": 60}}'
    run(tmp_path, 'label = "zone=b"')
    assert seen["labels"] == ("zone=b",)


def test_file_only_settings_reach_the_command(tmp_path: Path) -> None:
    run(tmp_path, "sizes = { big = { memory_mb = 4096 } }")
    assert seen["file_only"] == {"sizes": {"big": {"memory_mb": 4096}}}
    run(tmp_path, None)
    assert seen["file_only"] == {}


def test_controller_fields_are_type_checked() -> None:
    config = ControllerConfig.build({"resync_seconds": 2, "sizes": {}}, "c.toml", listen=None)
    assert config.resync_seconds == 2.0
    assert config.listen == "127.0.0.1:7070"
    with pytest.raises(errors.InvalidArgument, match=r"c\.toml: gc_keep_releases: expected int"):
        ControllerConfig.build({"gc_keep_releases": "10"}, "c.toml")
    with pytest.raises(errors.InvalidArgument, match="expected int"):
        ControllerConfig.build({"heartbeat_seconds": True}, "c.toml")
    with pytest.raises(errors.InvalidArgument, match="expected list"):
        ControllerConfig.build({"etcd": "a:1"}, "c.toml")


def test_controller_flags_win_over_file_values() -> None:
    config = ControllerConfig.build({"nats_replicas": 3}, "c.toml", nats_replicas=None)
    assert config.nats_replicas == 3
    config = ControllerConfig.build({"listen": "0.0.0.0:7070"}, "c.toml", listen="10.1.1.1:7070")
    assert config.listen == "10.1.1.1:7070"
