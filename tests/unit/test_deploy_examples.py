"""deploy/: the example configs document every daemon option and load cleanly;
the systemd units keep the properties operators rely on.

A new flag (or controller setting) without a line in its example file fails
here, so the operator docs cannot go stale.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.__main__ import main as agent_main
from builder.__main__ import main as builder_main
from controller import __main__ as controller_main
from controller.__main__ import serve_cmd
from controller.config import FILE_KEYS, ControllerConfig
from router.__main__ import main as router_main
from slipway import conffile

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DAEMONS: dict[str, click.Command] = {
    "controller": serve_cmd,
    "agent": agent_main,
    "router": router_main,
    "builder": builder_main,
}


def option_keys(daemon: str) -> set[str]:
    keys = {conffile.key_of(p) for p in DAEMONS[daemon].params}
    keys -= {None, "config", "help"}
    if daemon == "controller":
        keys |= FILE_KEYS  # settings with no flag are documented too
    return {k for k in keys if k is not None}


def documented(text: str, key: str) -> bool:
    """``key = ...`` or ``[key...]``, commented out (showing the default) or set."""
    pattern = rf"^\s*(#\s*)?({re.escape(key)}\s*=|\[{re.escape(key)}[.\]])"
    return re.search(pattern, text, re.MULTILINE) is not None


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_every_option_is_in_the_example(daemon: str) -> None:
    text = (DEPLOY / "config" / f"{daemon}.toml").read_text()
    missing = sorted(k for k in option_keys(daemon) if not documented(text, k))
    assert not missing, f"deploy/config/{daemon}.toml does not document: {', '.join(missing)}"


def test_the_completeness_check_can_fail() -> None:
    assert documented("# slots = 1\n", "slots")
    assert documented("[timings]\n", "timings")
    assert not documented("# slots_max = 1\n# the slots\n", "slots")


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_example_loads_without_unknown_keys_or_bad_types(daemon: str) -> None:
    path = DEPLOY / "config" / f"{daemon}.toml"
    command = DAEMONS[daemon]
    file_only = FILE_KEYS if daemon == "controller" else ()
    with click.Context(command) as ctx:
        defaults, extra = conffile.split(ctx, conffile.read(path), path, file_only=file_only)
    assert defaults, "the example sets nothing for a cluster"
    if daemon == "controller":
        ControllerConfig.build(extra, str(path))


def test_controller_example_through_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ControllerConfig] = []

    async def fake_serve(config: ControllerConfig) -> None:
        seen.append(config)

    monkeypatch.setattr(controller_main, "serve", fake_serve)
    path = DEPLOY / "config" / "controller.toml"
    result = CliRunner().invoke(controller_main.cli, ["serve", "--config", str(path)], env={})
    assert result.exit_code == 0, result.output
    assert seen[0].nats_replicas == 3
    assert len(seen[0].etcd) == 3
    assert seen[0].listen == "0.0.0.0:7070"


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_commented_defaults_are_valid_toml(daemon: str) -> None:
    """Uncommenting the `# key = value` lines gives a file the daemon accepts."""
    path = DEPLOY / "config" / f"{daemon}.toml"
    keys = option_keys(daemon)
    lines = []
    for line in path.read_text().splitlines():
        m = re.match(r"^#\s*(\w+)\s*=(.*)$", line)
        if m and m.group(1) in keys and m.group(1) not in ("sizes", "timings"):
            line = f"{m.group(1)} ={m.group(2)}"
        lines.append(line)
    values = tomllib.loads("\n".join(lines))
    with click.Context(DAEMONS[daemon]) as ctx:
        file_only = FILE_KEYS if daemon == "controller" else ()
        _, extra = conffile.split(ctx, values, path, file_only=file_only)
    if daemon == "controller":
        ControllerConfig.build(extra, str(path))


def unit(name: str) -> str:
    return (DEPLOY / "systemd" / name).read_text()


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_units_notify_restart_and_read_their_config(daemon: str) -> None:
    text = unit(f"slipway-{daemon}.service")
    assert "\nType=notify\n" in text
    assert "\nRestart=on-failure\n" in text
    assert re.search(r"^LimitNOFILE=\d+$", text, re.MULTILINE)
    assert f"--config /etc/slipway/{daemon}.toml" in text


def test_agent_restarts_never_kill_dynos() -> None:
    assert "\nKillMode=process\n" in unit("slipway-agent.service")


def test_builder_drains_before_its_sandboxes_are_killed() -> None:
    text = unit("slipway-builder.service")
    assert "\nKillMode=mixed\n" in text
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    drain = builder_main.params[[p.name for p in builder_main.params].index("drain_timeout")]
    assert stop > float(drain.default)  # type: ignore[arg-type]
