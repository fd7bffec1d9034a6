"""Issue 2 end to end: the real CLI against a real controller on a real etcd."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from slipway.v1 import types_pb2
from tests.harness import secure
from tests.harness.controller import ControllerProcess


def test_new_user_walkthrough(controller: ControllerProcess) -> None:
    cli = controller.cli
    out = cli("apps:create", "demo", check=True).stdout
    assert "Creating demo... done" in out

    out = cli("config:set", "-a", "demo", "A=1", "B=2", check=True).stdout
    assert "Setting A, B and restarting demo... done, v2" in out

    releases = cli("releases", "-a", "demo", check=True).stdout
    assert "v2" in releases and "Set A, B config vars" in releases
    assert "v1" in releases and "Initial release" in releases
    assert releases.index("v2") < releases.index("v1"), "newest first"

    out = cli("releases:rollback", "-a", "demo", "v1", check=True).stdout
    assert "Rolling back demo... done, v3" in out
    assert cli("config", "-a", "demo", "--json", check=True).stdout.strip() == "{}"

    out = cli("ps:scale", "-a", "demo", "web=2", check=True).stdout
    assert "now running web at 2:standard-1x" in out


def test_every_command_and_json(controller: ControllerProcess) -> None:
    cli = controller.cli
    generated = json.loads(cli("apps:create", "--json", check=True).stdout)
    assert generated["name"]
    cli("apps:create", "shop", check=True)

    listed = json.loads(cli("apps", "--json", check=True).stdout)
    assert {a["name"] for a in listed} == {generated["name"], "shop"}
    assert "shop" in cli("apps", check=True).stdout

    cli("config:set", "-a", "shop", "DATABASE_URL=postgres://x/y?a=b", "EMPTY=", check=True)
    assert (
        cli("config:get", "-a", "shop", "DATABASE_URL", check=True).stdout.strip()
        == "postgres://x/y?a=b"
    )
    config = json.loads(cli("config", "-a", "shop", "--json", check=True).stdout)
    assert config == {"DATABASE_URL": "postgres://x/y?a=b", "EMPTY": ""}
    assert (
        "DATABASE_URL='postgres://x/y?a=b'"
        in cli("config", "-a", "shop", "--shell", check=True).stdout
    )

    out = cli("config:unset", "-a", "shop", "EMPTY", check=True).stdout
    assert "Unsetting EMPTY and restarting shop... done, v3" in out
    info = json.loads(cli("releases:info", "-a", "shop", "v3", "--json", check=True).stdout)
    assert info["description"] == "Unset EMPTY config vars"
    assert info["config"] == {"DATABASE_URL": "postgres://x/y?a=b"}
    releases = json.loads(cli("releases", "-a", "shop", "--json", check=True).stdout)
    assert [r["version"] for r in releases] == ["3", "2", "1"]

    cli("ps:scale", "-a", "shop", "web=1", "worker=2:standard-2x", check=True)
    out = cli("ps:scale", "-a", "shop", "web+2", "worker-1", check=True).stdout
    assert "web at 3:standard-1x" in out and "worker at 1:standard-2x" in out
    cli("ps:type", "-a", "shop", "web=performance-m", check=True)
    formation = json.loads(cli("ps:type", "-a", "shop", "--json", check=True).stdout)
    assert {(f["type"], f["quantity"], f["size"]) for f in formation} == {
        ("web", 3, "performance-m"),
        ("worker", 1, "standard-2x"),
    }
    assert "performance-l" in cli("ps:type", "-a", "shop", check=True).stdout

    app_info = json.loads(cli("apps:info", "-a", "shop", "--json", check=True).stdout)
    assert app_info["app"]["current_release"] == "3"
    assert "Dynos:" in cli("apps:info", "-a", "shop", check=True).stdout

    refused = cli("apps:destroy", "-a", "shop")
    assert refused.returncode != 0 and "--confirm shop" in refused.stderr
    wrong = cli("apps:destroy", "-a", "shop", "--confirm", "shopp")
    assert wrong.returncode != 0 and "confirmation" in wrong.stderr
    cli("apps:destroy", "-a", "shop", "--confirm", "shop", check=True)
    assert "shop" not in {a["name"] for a in json.loads(cli("apps", "--json", check=True).stdout)}
    gone = cli("config", "-a", "shop")
    assert gone.returncode == 1 and "app 'shop' not found" in gone.stderr
    # The name is free again, and nothing of the old app leaks into the new one.
    cli("apps:create", "shop", check=True)
    assert json.loads(cli("config", "-a", "shop", "--json", check=True).stdout) == {}


def test_login_saves_the_token(controller: ControllerProcess) -> None:
    env_token = controller.token
    out = controller.cli(
        "login", "--api", controller.address, "--token", env_token, token="", check=True
    )
    assert "as test" in out.stdout
    saved = json.loads((controller.workdir / "cli.json").read_text())
    # The cluster CA the CLI checked the controller against is kept with the login.
    assert saved == {
        "api": controller.address,
        "token": env_token,
        "ca_file": str(secure.ca_file()),
    }


def test_errors_are_clear_and_exit_non_zero(controller: ControllerProcess) -> None:
    cli = controller.cli
    cli("apps:create", "demo", check=True)
    cases = [
        (("apps:create", "demo"), "already exists"),
        (("apps:create", "Bad_Name"), "invalid app name"),
        (("apps:create", "ab"), "3 to 30 characters"),
        (("apps:create", "a" * 31), "3 to 30 characters"),
        (("apps:create", "9lives"), "lowercase letter first"),
        (("config:set", "-a", "demo", "1ABC=x"), "not starting with a digit"),
        (("config:set", "-a", "demo", "BAD-KEY=x"), "invalid config var name"),
        (("config:set", "-a", "demo", "NOEQUALS"), "is not KEY=VALUE"),
        (("config", "-a", "nope"), "app 'nope' not found"),
        (("releases:info", "-a", "demo", "v42"), "release v42 of 'demo' not found"),
        (("releases:rollback", "-a", "demo", "v42"), "not found"),
        (("ps:scale", "-a", "demo", "web=1:huge-9x"), "unknown dyno size 'huge-9x'"),
        (("ps:scale", "-a", "demo", "web-1"), "below 0"),
        (("ps:scale", "-a", "demo", "web=500"), "at most 100"),
        (("ps:scale", "-a", "demo", "web"), "TYPE=N"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode in (1, 2), (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_oversized_config_is_rejected_and_nothing_changes(controller: ControllerProcess) -> None:
    cli = controller.cli
    cli("apps:create", "big", check=True)
    cli("config:set", "-a", "big", "SMALL=1", check=True)
    result = cli("config:set", "-a", "big", "HUGE=" + "x" * 33_000)
    assert result.returncode == 1
    assert "the limit is 32768 bytes" in result.stderr
    assert json.loads(cli("config", "-a", "big", "--json", check=True).stdout) == {"SMALL": "1"}
    versions = [
        r["version"] for r in json.loads(cli("releases", "-a", "big", "--json", check=True).stdout)
    ]
    assert versions == ["2", "1"], "a rejected change makes no release"
    # Just under the limit is fine.
    cli("config:set", "-a", "big", "FITS=" + "y" * (32 * 1024 - 100), check=True)


def test_json_errors_carry_the_servers_reason(controller: ControllerProcess) -> None:
    """With --json an error is one JSON object on stderr: the message, the server's
    stable reason, the status code; stdout stays empty for the script."""
    cli = controller.cli
    cli("apps:create", "taken", check=True)
    cases = [
        (("apps:info", "-a", "nope"), "app 'nope' not found", "app_not_found", "NOT_FOUND"),
        (("apps:create", "taken"), "already exists", "app_exists", "ALREADY_EXISTS"),
        (("apps:create", "Bad_Name"), "invalid app name", "invalid_app_name", "INVALID_ARGUMENT"),
    ]
    for args, message, reason, code in cases:
        result = cli(*args, "--json")
        assert result.returncode == 1 and result.stdout == "", (args, result.stdout)
        error = json.loads(result.stderr)["error"]
        assert message in error["message"], (args, error)
        assert (error["reason"], error["code"]) == (reason, code), (args, error)
    wrong = cli("apps", "--json", token="slw_not-a-real-token")
    assert json.loads(wrong.stderr)["error"]["reason"] == "bad_token"
    # Without --json the same error stays one plain line.
    plain = cli("apps:info", "-a", "nope")
    assert plain.returncode == 1 and plain.stderr.strip() == "Error: app 'nope' not found"


def test_bad_or_missing_token_is_unauthenticated(controller: ControllerProcess) -> None:
    wrong = controller.cli("apps", token="slw_not-a-real-token")
    assert wrong.returncode == 1 and "invalid API token" in wrong.stderr
    missing = controller.cli("apps", token="")
    assert missing.returncode == 1 and "not logged in" in missing.stderr
    with controller.client(token="") as client:
        try:
            client.list_apps()
        except Exception as exc:
            assert type(exc).__name__ == "Unauthenticated"
            assert "missing API token" in str(exc)
        else:
            raise AssertionError("a call without a token succeeded")
    # The controller is still serving after the rejections.
    assert controller.proc is not None and controller.proc.poll() is None
    controller.cli("apps", check=True)


def test_unreachable_controller_is_a_clear_error(controller: ControllerProcess) -> None:
    result = controller.cli("--api", "127.0.0.1:1", "apps")
    assert result.returncode == 1
    assert "cannot reach the controller at 127.0.0.1:1" in result.stderr


def test_fifty_concurrent_config_sets_lose_nothing(controller: ControllerProcess) -> None:
    controller.cli("apps:create", "busy", check=True)

    def set_one(i: int) -> int:
        with controller.client() as client:
            return int(client.update_config("busy", {f"KEY_{i}": str(i)}).release.version)

    with ThreadPoolExecutor(max_workers=50) as pool:
        versions = list(pool.map(set_one, range(50)))

    assert sorted(versions) == list(range(2, 52)), "each change got its own version"
    with controller.client() as client:
        config = dict(client.get_config("busy").config)
        releases = list(client.list_releases("busy").releases)
    assert config == {f"KEY_{i}": str(i) for i in range(50)}
    assert [r.version for r in releases] == list(range(51, 0, -1)), "no gaps, no duplicates"
    # Each release's snapshot holds exactly the keys set up to that release.
    sizes = sorted(len(r.config) for r in releases)
    assert sizes == list(range(0, 51))


def test_scaling_checks_the_release_process_types(controller: ControllerProcess) -> None:
    with controller.client() as client:
        client.create_app("typed")
        release = client.create_release(
            "typed",
            types_pb2.SlugRef(digest="ab" * 32, size_bytes=10, stack="slipway-24"),
            # (a "release" entry would be the release command: the release would wait for it)
            {"web": "python3 server.py", "clock": "python3 clock.py"},
        ).release
        assert release.description == "Deploy abababa"
    cli = controller.cli
    formation = json.loads(cli("ps:type", "-a", "typed", "--json", check=True).stdout)
    assert {(f["type"], f.get("quantity", 0)) for f in formation} == {("web", 1), ("clock", 0)}
    bad = cli("ps:scale", "-a", "typed", "worker=1")
    assert bad.returncode == 1
    assert "no process type worker in release v2; it defines: clock, web" in bad.stderr
    cli("ps:scale", "-a", "typed", "clock=1", check=True)
    no_release = cli("ps:scale", "-a", "typed", "release=1")
    assert no_release.returncode == 1


def test_controller_restart_keeps_all_state(controller: ControllerProcess) -> None:
    cli = controller.cli
    cli("apps:create", "keep", check=True)
    cli("config:set", "-a", "keep", "A=1", check=True)
    cli("ps:scale", "-a", "keep", "web=2", check=True)
    before = {
        "apps": cli("apps", "--json", check=True).stdout,
        "config": cli("config", "-a", "keep", "--json", check=True).stdout,
        "releases": cli("releases", "-a", "keep", "--json", check=True).stdout,
        "formation": cli("ps:type", "-a", "keep", "--json", check=True).stdout,
    }
    controller.stop()
    controller.start()
    after = {
        "apps": cli("apps", "--json", check=True).stdout,
        "config": cli("config", "-a", "keep", "--json", check=True).stdout,
        "releases": cli("releases", "-a", "keep", "--json", check=True).stdout,
        "formation": cli("ps:type", "-a", "keep", "--json", check=True).stdout,
    }
    assert after == before
    # And it keeps working: versions continue where they were.
    out = cli("config:set", "-a", "keep", "B=2", check=True).stdout
    assert "done, v3" in out


def test_controller_logs_one_line_per_call(controller: ControllerProcess) -> None:
    controller.cli("apps:create", "logged", check=True)
    controller.cli("config", "-a", "missing-app")
    lines = [
        json.loads(line)
        for line in controller.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    calls = [line for line in lines if line.get("event") == "api call"]
    assert any(
        c["method"] == "CreateApp" and c["app"] == "logged" and c["code"] == "OK" for c in calls
    )
    assert any(
        c["method"] == "GetConfigVars" and c["app"] == "missing-app" and c["code"] == "NOT_FOUND"
        for c in calls
    )
