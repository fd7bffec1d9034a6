"""Add-ons through the real CLI and controller, against a real (test) provider over HTTP.

The provider (tests/harness/addon_provider.py) speaks the partner API v3 and
calls the controller's callback API back over HTTPS when it answers 202.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.keys import Keys
from tests.harness import secure
from tests.harness.addon_provider import Provider, Script
from tests.harness.controller import BIN, ControllerProcess
from tests.harness.wait import eventually


def _config(path: Path) -> Path:
    path.write_text("addons_tick_seconds = 0.2\nleader_ttl_seconds = 3\n")
    return path


def _controller(etcd: str, prefix: str, nats: str, workdir: Path) -> ControllerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return ControllerProcess(
        etcd, prefix, workdir, nats, extra_args=["--config", str(_config(workdir / "c.toml"))]
    )


@pytest.fixture
def fast_controller(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[ControllerProcess]:
    proc = _controller(etcd_endpoint, etcd_prefix, nats_url, tmp_path / "controller")
    proc.start()
    yield proc
    proc.stop()


def register(controller: ControllerProcess, manifest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "slipway-controller"), "addons:register", str(manifest)],
        env=controller.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def addon_json(controller: ControllerProcess, app: str, name: str) -> dict[str, object]:
    out = controller.cli("addons:info", name, "-a", app, "--json", check=True).stdout
    return json.loads(out)


def config_of(controller: ControllerProcess, app: str) -> dict[str, str]:
    return json.loads(controller.cli("config", "-a", app, "--json", check=True).stdout)


def releases_of(controller: ControllerProcess, app: str) -> list[str]:
    out = controller.cli("releases", "-a", app, "--json", check=True).stdout
    return [r["description"] for r in json.loads(out)]


def test_async_provider_failing_once_ends_provisioned_once_and_app_destroy_deprovisions(
    fast_controller: ControllerProcess, tmp_path: Path
) -> None:
    cli = fast_controller.cli
    with Provider("simple", secure.ca_file(), Script(mode="async", fail_first=1)) as provider:
        out = register(fast_controller, provider.write_manifest(tmp_path / "m.json"))
        assert out.returncode == 0, out.stderr
        assert "Registered add-on service simple" in out.stdout
        services = cli("addons:services", check=True).stdout
        assert "simple" in services and "small, large" in services

        cli("apps:create", "shop", check=True)
        created = cli("addons:create", "simple", "-a", "shop", "--wait", "--", "--size=10")
        assert created.returncode == 0, created.stdout + created.stderr
        assert "Created simple-" in created.stdout and "as SIMPLE" in created.stdout
        # The 500 was shown as progress on the way.
        assert "the provider answered 500" in created.stdout
        assert not provider.callback_errors

        posts = provider.requests("POST")
        assert len(posts) == 2 and posts[0].body["uuid"] == posts[1].body["uuid"]
        assert all(p.authorized for p in posts)
        assert posts[1].body["options"] == {"size": "10"}
        assert posts[1].body["callback_url"].startswith("https://127.0.0.1:")
        assert len(provider.resources) == 1
        resource = next(iter(provider.resources.values()))

        addons = json.loads(cli("addons", "-a", "shop", "--json", check=True).stdout)
        assert len(addons) == 1 and addons[0]["state"] == "provisioned"
        assert addons[0]["provider_id"] == resource.id
        assert config_of(fast_controller, "shop") == {"SIMPLE_URL": f"test://{resource.id}/small"}
        descriptions = releases_of(fast_controller, "shop")
        name = addons[0]["name"]
        # Exactly one release for the provisioning, however many requests it took.
        assert descriptions == [f"Attach SIMPLE (@ref:{name})", "Initial release"]

        refused = cli("config:set", "SIMPLE_URL=elsewhere", "-a", "shop")
        assert refused.returncode == 1
        assert "SIMPLE_URL is set by the add-on attached as SIMPLE" in refused.stderr
        assert "Add-ons:" in cli("apps:info", "-a", "shop", check=True).stdout

        cli("apps:destroy", "-a", "shop", "--confirm", "shop", check=True)
        eventually(lambda: provider.deleted == [resource.uuid], timeout=30)
        assert provider.resources == {}


def test_attach_upgrade_detach_destroy_each_make_a_release(
    fast_controller: ControllerProcess, tmp_path: Path
) -> None:
    cli = fast_controller.cli
    with Provider("kv", secure.ca_file()) as provider:
        assert (
            register(fast_controller, provider.write_manifest(tmp_path / "m.json")).returncode == 0
        )
        cli("apps:create", "api", check=True)
        cli("apps:create", "worker", check=True)
        created = json.loads(
            cli(
                "addons:create",
                "kv:small",
                "-a",
                "api",
                "--as",
                "CACHE",
                "--wait",
                "--json",
                check=True,
            ).stdout
        )
        name = created["name"]
        rid = created["provider_id"]
        assert config_of(fast_controller, "api") == {"CACHE_URL": f"test://{rid}/small"}

        out = cli("addons:attach", name, "-a", "worker", "--as", "SHARED", check=True).stdout
        assert f"Attaching {name} to worker as SHARED... done, v2" in out
        assert config_of(fast_controller, "worker") == {"SHARED_URL": f"test://{rid}/small"}
        taken = cli("addons:attach", name, "-a", "worker")
        assert taken.returncode == 1 and "already attached" in taken.stderr

        cli("addons:upgrade", name, "large", "-a", "api", check=True)
        eventually(lambda: config_of(fast_controller, "api")["CACHE_URL"].endswith("/large"), 20)
        eventually(
            lambda: config_of(fast_controller, "worker")["SHARED_URL"].endswith("/large"), 20
        )
        assert [r.body["plan"] for r in provider.requests("PUT")] == ["large"]
        assert releases_of(fast_controller, "api")[0] == f"Update CACHE by {name}"
        elsewhere = cli("addons:upgrade", name, "small", "-a", "worker")
        assert elsewhere.returncode == 1 and "belongs to app 'api'" in elsewhere.stderr

        owner = cli("addons:detach", "CACHE", "-a", "api")
        assert owner.returncode == 1 and "addons:destroy" in owner.stderr
        out = cli("addons:detach", "SHARED", "-a", "worker", check=True).stdout
        assert "Detaching SHARED" in out
        assert config_of(fast_controller, "worker") == {}
        assert releases_of(fast_controller, "worker")[0] == f"Detach SHARED (@ref:{name})"

        unconfirmed = cli("addons:destroy", name, "-a", "api")
        assert unconfirmed.returncode == 1 and "--confirm api" in unconfirmed.stderr
        cli("addons:destroy", name, "-a", "api", "--confirm", "api", "--wait", check=True)
        assert config_of(fast_controller, "api") == {}
        assert releases_of(fast_controller, "api")[0] == f"Detach CACHE (@ref:{name})"
        assert len(provider.deleted) == 1 and provider.resources == {}
        assert json.loads(cli("addons", "-a", "api", "--json", check=True).stdout) == []


def test_a_refused_provision_fails_with_the_providers_message_and_retry_recovers(
    fast_controller: ControllerProcess, tmp_path: Path
) -> None:
    cli = fast_controller.cli
    script = Script(refuse_first=1, refusal="no capacity left in region local")
    with Provider("simple", secure.ca_file(), script) as provider:
        register(fast_controller, provider.write_manifest(tmp_path / "m.json"))
        cli("apps:create", "shop", check=True)
        failed = cli("addons:create", "simple", "-a", "shop", "--wait")
        assert failed.returncode == 1
        assert "no capacity left in region local" in failed.stderr
        name = json.loads(cli("addons", "-a", "shop", "--json", check=True).stdout)[0]["name"]
        assert addon_json(fast_controller, "shop", name)["state"] == "failed"
        assert config_of(fast_controller, "shop") == {}

        cli("addons:retry", name, "-a", "shop", check=True)
        out = cli("addons:wait", name, "-a", "shop", check=True).stdout
        assert f"{name}: provisioned" in out
        assert "SIMPLE_URL" in config_of(fast_controller, "shop")
        assert len(provider.resources) == 1


def test_bad_input_is_refused_clearly(fast_controller: ControllerProcess, tmp_path: Path) -> None:
    cli = fast_controller.cli
    with Provider("simple", secure.ca_file()) as provider:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(provider.manifest(api={"password": "short"})))
        out = register(fast_controller, bad)
        assert out.returncode != 0 and "at least 16 characters" in out.stderr
        remote = provider.manifest()
        remote["api"]["production"]["base_url"] = "http://provider.example.com/heroku/resources"
        (tmp_path / "remote.json").write_text(json.dumps(remote))
        out = register(fast_controller, tmp_path / "remote.json")
        assert out.returncode != 0 and "in the clear; use https" in out.stderr
        register(fast_controller, provider.write_manifest(tmp_path / "m.json"))

        cli("apps:create", "shop", check=True)
        cli("config:set", "SIMPLE_URL=mine", "-a", "shop", check=True)
        cases = [
            (("addons:create", "nosuch", "-a", "shop"), "no add-on service 'nosuch'"),
            (("addons:create", "simple:huge", "-a", "shop"), "no plan 'huge' for simple"),
            (("addons:create", "simple", "--as", "lower", "-a", "shop"), "invalid attachment"),
            (("addons:create", "simple", "-a", "shop"), "already has SIMPLE_URL"),
            (("addons:create", "simple", "-a", "shop", "--", "size=1"), "--NAME=VALUE"),
            (("addons:info", "nothing-here", "-a", "shop"), "not found"),
            (("addons:plans", "nosuch"), "no add-on service"),
        ]
        for args, message in cases:
            result = cli(*args)
            assert result.returncode in (1, 2), (args, result.stdout)
            assert message in result.stderr, (args, result.stderr)
            assert "Traceback" not in result.stderr
        # Nothing was made by the refused requests.
        assert json.loads(cli("addons", "-a", "shop", "--json", check=True).stdout) == []
        assert provider.received == []


def test_a_leader_killed_mid_provision_makes_one_resource(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> None:
    first = _controller(etcd_endpoint, etcd_prefix, nats_url, tmp_path / "c1")
    first.start()
    second = _controller(etcd_endpoint, etcd_prefix, nats_url, tmp_path / "c2")
    second.token = first.token
    try:
        with Provider("simple", secure.ca_file(), Script(hold_first=1)) as provider:
            register(first, provider.write_manifest(tmp_path / "m.json"))
            first.cli("apps:create", "shop", check=True)
            second.start()
            first.cli("addons:create", "simple", "-a", "shop", check=True)
            # The leader (the first controller) has sent the request and waits for it.
            assert provider.held.wait(20)
            assert first.proc is not None
            first.proc.kill()
            first.proc.wait()
            provider.script.release_held.set()
            out = second.cli("addons:wait", "-a", "shop", "--timeout", "60", check=True).stdout
            assert "provisioned" in out
            posts = provider.requests("POST")
            assert len(posts) >= 2 and len({p.body["uuid"] for p in posts}) == 1
            assert len(provider.resources) == 1
            name = json.loads(second.cli("addons", "-a", "shop", "--json", check=True).stdout)[0][
                "name"
            ]
            attaches = [d for d in releases_of(second, "shop") if d.startswith("Attach")]
            assert attaches == [f"Attach SIMPLE (@ref:{name})"]
    finally:
        first.stop()
        second.stop()


def grants_in_etcd(controller: ControllerProcess) -> dict[str, list[dict[str, object]]]:
    keys = Keys(controller.prefix)

    async def read() -> dict[str, list[dict[str, object]]]:
        async with secure.root_etcd([controller.etcd_endpoint]) as etcd:
            kvs, _ = await etcd.get_prefix(keys.addon_grants())
        start = len(keys.addon_grants())
        return {kv.key[start:].decode(): json.loads(kv.value) for kv in kvs}

    return asyncio.run(read())


def test_a_built_in_service_opens_its_declared_port_to_the_apps_it_is_attached_to(
    fast_controller: ControllerProcess, tmp_path: Path
) -> None:
    """What agents open their firewalls to: only the declared address and ports,
    only for apps with an attachment, and shut when the attachment goes."""
    cli = fast_controller.cli
    script = Script(url_template="pg://u:secret@10.9.8.7:6001/{rid}")
    with Provider("db", secure.ca_file(), script) as provider:
        network = {"built_in": True, "network": {"address": "10.9.8.7", "ports": "6000-6010"}}
        manifest = provider.write_manifest(tmp_path / "m.json", slipway=network)
        assert register(fast_controller, manifest).returncode == 0
        cli("apps:create", "api", check=True)
        cli("apps:create", "worker", check=True)
        cli("apps:create", "bystander", check=True)
        name = json.loads(
            cli("addons:create", "db", "-a", "api", "--wait", "--json", check=True).stdout
        )["name"]
        cli("addons:attach", name, "-a", "worker", "--as", "SHARED", check=True)
        endpoint = [{"address": "10.9.8.7", "port": 6001}]
        eventually(
            lambda: grants_in_etcd(fast_controller) == {"api": endpoint, "worker": endpoint}, 20
        )
        # No password or database name in what every agent reads.
        assert "secret" not in json.dumps(grants_in_etcd(fast_controller))

        cli("addons:detach", "SHARED", "-a", "worker", check=True)
        eventually(lambda: grants_in_etcd(fast_controller) == {"api": endpoint}, 20)
        cli("addons:destroy", name, "-a", "api", "--confirm", "api", "--wait", check=True)
        eventually(lambda: grants_in_etcd(fast_controller) == {}, 20)
