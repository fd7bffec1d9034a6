"""Accounts and per-app access against a real controller, etcd and the real CLI:
two people, each with apps; collaborators with Heroku's permissions; login
throttling; removed accounts."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import grpc
import pytest

from slipway import errors
from slipway.v1 import types_pb2
from tests.harness.controller import BIN, ControllerProcess
from tests.harness.people import PASSWORD, Person, admin_creates
from tests.harness.slugs import upload_slug
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def people(controller: ControllerProcess, tmp_path: Path) -> tuple[Person, Person]:
    for email in ("ada@example.com", "bob@example.com"):
        admin_creates(controller, email)
    ada = Person("ada@example.com", controller, tmp_path / "ada.json")
    bob = Person("bob@example.com", controller, tmp_path / "bob.json")
    for person in (ada, bob):
        assert f"as {person.email}" in person.login()
    return ada, bob


def release_test_slug(controller: ControllerProcess, app: str) -> None:
    slug = asyncio.run(upload_slug(controller.nats_url))
    with controller.client() as admin:
        admin.create_release(
            app,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
            {"worker": slug.process_types["worker"]},
        )


def test_people_see_and_touch_only_their_own_apps(people: tuple[Person, Person]) -> None:
    ada, bob = people
    ada.ok("apps:create", "ada-app")
    bob.ok("apps:create", "bob-app")
    assert "ada-app" in ada.ok("apps") and "bob-app" not in ada.ok("apps")
    assert "bob-app" in bob.ok("apps") and "ada-app" not in bob.ok("apps")
    # Someone else's app looks like no app at all.
    assert "app 'ada-app' not found" in bob.refused("config", "-a", "ada-app")
    assert "app 'ada-app' not found" in bob.refused(
        "apps:destroy", "-a", "ada-app", "--confirm", "ada-app"
    )
    assert "ada@example.com" in ada.ok("whoami")
    assert "Owner:" in ada.ok("apps:info", "-a", "ada-app")
    assert "ada@example.com" in ada.ok("apps:info", "-a", "ada-app")


def test_collaborators_get_what_their_permissions_say(
    controller: ControllerProcess, people: tuple[Person, Person]
) -> None:
    ada, bob = people
    ada.ok("apps:create", "shared-app")
    ada.ok("config:set", "SECRET=s3cr3t", "-a", "shared-app")
    release_test_slug(controller, "shared-app")
    ada.ok("access:add", "bob@example.com", "--permissions", "view", "-a", "shared-app")
    assert "bob@example.com" in ada.ok("access", "-a", "shared-app")

    # view: sees the app and its releases, cannot deploy, scale or read config values.
    assert "shared-app" in bob.ok("apps")
    assert "v" in bob.ok("releases", "-a", "shared-app")
    for args, permission in [
        (("config", "-a", "shared-app"), "operate"),
        (("ps:scale", "worker=1", "-a", "shared-app"), "operate"),
        (("releases:rollback", "v2", "-a", "shared-app"), "deploy"),
        (("apps:destroy", "-a", "shared-app", "--confirm", "shared-app"), "manage"),
    ]:
        assert f"lacks the {permission} permission" in bob.refused(*args)
    assert "s3cr3t" not in bob.slipway("config", "-a", "shared-app").stdout

    # operate: scales and reads config values, still cannot destroy.
    ada.ok("access:update", "bob@example.com", "--permissions", "operate", "-a", "shared-app")
    bob.ok("ps:scale", "worker=0", "-a", "shared-app")
    assert "s3cr3t" in bob.ok("config", "-a", "shared-app")
    assert "lacks the manage permission" in bob.refused(
        "apps:destroy", "-a", "shared-app", "--confirm", "shared-app"
    )
    # Nor may a collaborator without manage hand out access.
    assert "lacks the manage permission" in bob.refused(
        "access:add", "ada@example.com", "-a", "shared-app"
    )

    # Removing a collaborator takes effect at once (within 5 s, says the issue).
    ada.ok("access:remove", "bob@example.com", "-a", "shared-app")
    eventually(lambda: "not found" in bob.refused("releases", "-a", "shared-app"), 5, 0.2)
    assert "shared-app" not in bob.ok("apps")

    # Releases and the app's log say who did it.
    assert "ada@example.com" in ada.ok("releases", "-a", "shared-app")

    # Every change is in the app's audit trail with who made it, and no secret.
    lines = ada.ok("audit", "-a", "shared-app", "--json").splitlines()
    trail = [(e["actor"], e["action"], e.get("detail", "")) for e in map(json.loads, lines)]
    assert ("ada@example.com", "UpdateConfigVars", "set SECRET") in trail
    assert ("ada@example.com", "AddCollaborator", "bob@example.com view") in trail
    assert ("bob@example.com", "ScaleFormation", "worker=0") in trail
    assert ("ada@example.com", "RemoveCollaborator", "bob@example.com") in trail
    assert not [e for e in trail if e[1] in ("GetApp", "ListReleases")]  # reads are not changes
    assert "s3cr3t" not in "\n".join(lines)
    assert all(json.loads(line)["source"] == "127.0.0.1" for line in lines)


def test_platform_commands_are_for_admins(
    controller: ControllerProcess, people: tuple[Person, Person]
) -> None:
    ada, _ = people
    assert "for platform admins" in ada.refused("nodes")
    assert "for platform admins" in ada.refused("users")
    listed = controller.cli("users", "--json", check=True).stdout
    assert {u["email"] for u in json.loads(listed)} == {"ada@example.com", "bob@example.com"}
    assert "for platform admins" in ada.refused("audit", "--platform")
    platform = controller.cli("audit", "--platform", check=True).stdout
    assert "CreateUser" in platform and "bob@example.com" in platform
    assert "Login" in platform and "ada@example.com" in platform


def test_wrong_passwords_are_throttled_and_the_right_one_works_afterwards(
    controller: ControllerProcess, people: tuple[Person, Person]
) -> None:
    with controller.client(token="") as anonymous:
        codes = []
        for _ in range(20):
            try:
                anonymous.login("ada@example.com", "not-the-password")
            except errors.SlipwayError as exc:
                codes.append(exc.code)
        assert codes[0] is grpc.StatusCode.UNAUTHENTICATED
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes  # the later ones wait

        def logs_in() -> bool:
            try:
                return bool(anonymous.login("ada@example.com", PASSWORD["ada@example.com"]).token)
            except errors.ResourceExhausted as exc:
                assert "try again in" in exc.message
                return False

        eventually(logs_in, 60, 1.0)


def test_a_removed_account_and_its_tokens_stop_working(
    controller: ControllerProcess, people: tuple[Person, Person]
) -> None:
    _, bob = people
    token = bob.token
    with controller.client(token=token) as client:
        assert client.whoami().email == "bob@example.com"
    removed = controller.cli("users:remove", "bob@example.com", "--confirm", "bob@example.com")
    assert removed.returncode == 0, removed.stderr
    assert "1 token(s) revoked" in removed.stdout
    assert "invalid API token" in bob.refused("apps")
    with controller.client(token="") as anonymous, pytest.raises(errors.Unauthenticated):
        anonymous.login("bob@example.com", PASSWORD["bob@example.com"])


def test_the_first_admin_comes_from_the_controller_and_sees_every_app(
    controller: ControllerProcess, people: tuple[Person, Person], tmp_path: Path
) -> None:
    ada, _ = people
    ada.ok("apps:create", "ada-only")
    create = ["users", "create", "root@example.com", "--admin", "--password-stdin"]
    made = subprocess.run(
        [str(BIN / "slipway-controller"), *create],
        env=controller.env(),
        input="root-secret-1\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "Created admin root@example.com" in made.stdout
    root = Person("root@example.com", controller, tmp_path / "root.json", "root-secret-1")
    root.login()
    assert "admin" in root.ok("whoami")
    assert "ada-only" in root.ok("apps")
    assert "ada-only" in root.ok("apps:info", "-a", "ada-only")


def test_named_tokens_keep_to_their_scope_expire_and_can_be_revoked(
    controller: ControllerProcess, people: tuple[Person, Person]
) -> None:
    ada, _ = people
    ada.ok("apps:create", "scoped-app")
    made = json.loads(
        ada.ok("authorizations:create", "-d", "ci reads", "--scope", "read", "--json")
    )
    reader = made["token"]
    listed = ada.ok("authorizations")
    assert made["authorization"]["id"] in listed and "ci reads" in listed

    with controller.client(token=reader) as ci:
        assert ci.whoami().scope == "read"
        assert [a.name for a in ci.list_apps().apps] == ["scoped-app"]
        with pytest.raises(errors.PermissionDenied, match="read-only"):
            ci.update_config("scoped-app", {"X": "1"})
        # Nor may a read token make itself a stronger one.
        with pytest.raises(errors.PermissionDenied, match="read-only"):
            ci.create_authorization("escalate", "global")
    ada.ok("authorizations:revoke", made["authorization"]["id"])
    with controller.client(token=reader) as ci:
        # The controller trusts a verified token for a few seconds (cache_seconds);
        # a revoke on the same controller drops that at once.
        with pytest.raises(errors.Unauthenticated):
            ci.list_apps()

    short = json.loads(ada.ok("authorizations:create", "--expires-in", "2s", "--json"))
    with controller.client(token=short["token"]) as soon:
        assert soon.whoami().email == "ada@example.com"

        def refused() -> bool:
            try:
                soon.whoami()
            except errors.Unauthenticated as exc:
                assert "expired" in exc.message
                return True
            return False

        eventually(refused, 15, 0.5)
    assert "not a duration" in ada.refused("authorizations:create", "--expires-in", "soon")


def test_an_operator_token_has_no_authorizations(controller: ControllerProcess) -> None:
    with controller.client() as admin, pytest.raises(errors.FailedPrecondition, match="no account"):
        admin.create_authorization("x")
