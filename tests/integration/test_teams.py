"""Teams against a real controller, etcd and the real CLI: a team owns apps and
its members act on them by role (admin, member, viewer); the membership rules
keep a team with an admin; leaving a team takes its access away."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.controller import ControllerProcess
from tests.harness.people import Person, admin_creates
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def crew(controller: ControllerProcess, tmp_path: Path) -> tuple[Person, Person, Person]:
    people = []
    for name in ("ada", "bob", "cy"):
        email = f"{name}@example.com"
        admin_creates(controller, email)
        person = Person(email, controller, tmp_path / f"{name}.json")
        person.login()
        people.append(person)
    ada, bob, cy = people
    return ada, bob, cy


def test_a_team_shares_its_apps_by_role(crew: tuple[Person, Person, Person]) -> None:
    ada, bob, cy = crew
    assert "you are its admin" in ada.ok("teams:create", "core")
    ada.ok("members:add", "bob@example.com", "--role", "member", "-t", "core")
    ada.ok("members:add", "cy@example.com", "--role", "viewer", "-t", "core")
    members = {m["email"]: m["role"] for m in json.loads(ada.ok("members", "-t", "core", "--json"))}
    assert members == {
        "ada@example.com": "admin",
        "bob@example.com": "member",
        "cy@example.com": "viewer",
    }
    teams = json.loads(bob.ok("teams", "--json"))
    assert [(t["name"], t["role"], t["members"]) for t in teams] == [("core", "member", 3)]

    # A member makes an app in the team; everyone in the team sees it.
    assert "in team core" in bob.ok("apps:create", "core-api", "--team", "core")
    bob.ok("config:set", "DATABASE_URL=postgres://secret", "-a", "core-api")
    for person in (ada, bob, cy):
        assert "core-api" in person.ok("apps", "-t", "core")
    assert "team core" in ada.ok("apps")

    # The viewer sees names, not values, and changes nothing.
    assert cy.ok("config", "--names", "-a", "core-api").split() == ["DATABASE_URL"]
    assert "lacks the operate permission" in cy.refused("config", "-a", "core-api")
    assert "lacks the operate permission" in cy.refused("ps:scale", "web=0", "-a", "core-api")
    assert "needs the member role" in cy.refused("apps:create", "cy-app", "--team", "core")
    assert "needs the admin role" in cy.refused("members:add", "x@example.com", "-t", "core")

    # Ada (team admin) may do everything to the team's apps, though not its creator.
    ada.ok("config:set", "LOG_LEVEL=debug", "-a", "core-api")
    access = {
        a["email"]: a["role"] for a in json.loads(ada.ok("access", "-a", "core-api", "--json"))
    }
    assert access["ada@example.com"] == "team admin"
    assert access["cy@example.com"] == "team viewer"
    assert access["bob@example.com"] == "team member, collaborator"  # its creator manages it

    # An app of the team made by the admin: the member deploys and operates, not manages.
    ada.ok("apps:create", "core-web", "--team", "core")
    bob.ok("config", "-a", "core-web")
    assert "lacks the manage permission" in bob.refused(
        "apps:destroy", "-a", "core-web", "--confirm", "core-web"
    )
    assert "lacks the manage permission" in bob.refused("config:set", "A=1", "-a", "core-web")

    assert "no user nobody@example.com" in ada.refused(
        "members:add", "nobody@example.com", "-t", "core"
    )

    # Out of the team, cy sees nothing of it within 5 seconds.
    ada.ok("members:remove", "cy@example.com", "-t", "core")
    eventually(lambda: "not found" in cy.refused("releases", "-a", "core-web"), 5, 0.2)
    assert "core-web" not in cy.ok("apps")
    assert "team 'core' not found" in cy.refused("members", "-t", "core")

    # Who did what, in the trails.
    trail = [json.loads(line) for line in ada.ok("audit", "-a", "core-api", "--json").splitlines()]
    changes = [(e["actor"], e["action"], e.get("detail", "")) for e in trail]
    assert ("bob@example.com", "UpdateConfigVars", "set DATABASE_URL") in changes
    assert ("ada@example.com", "UpdateConfigVars", "set LOG_LEVEL") in changes


def test_a_team_keeps_an_admin_and_only_empty_teams_go(
    controller: ControllerProcess, crew: tuple[Person, Person, Person]
) -> None:
    ada, bob, _ = crew
    ada.ok("teams:create", "ops")
    ada.ok("members:add", "bob@example.com", "-t", "ops")
    assert "already in team 'ops'" in ada.refused("members:add", "bob@example.com", "-t", "ops")
    assert "last admin" in ada.refused(
        "members:set", "ada@example.com", "--role", "member", "-t", "ops"
    )
    assert "last admin" in ada.refused("members:remove", "ada@example.com", "-t", "ops")
    # With a second admin, the first may step down.
    ada.ok("members:set", "bob@example.com", "--role", "admin", "-t", "ops")
    ada.ok("members:set", "ada@example.com", "--role", "member", "-t", "ops")
    assert "needs the admin role" in ada.refused("members:add", "cy@example.com", "-t", "ops")

    bob.ok("apps:create", "ops-tool", "--team", "ops")
    assert "owns ops-tool" in bob.refused("teams:destroy", "-t", "ops", "--confirm", "ops")
    assert "repeat the name" in bob.refused("teams:destroy", "-t", "ops")
    bob.ok("apps:destroy", "-a", "ops-tool", "--confirm", "ops-tool")
    bob.ok("teams:destroy", "-t", "ops", "--confirm", "ops")
    assert json.loads(bob.ok("teams", "--json")) == []
    assert "team 'ops' not found" in bob.refused("apps:create", "late", "--team", "ops")

    # Bad input gets a clear error; a team one is not in looks like no team.
    assert "invalid team name" in bob.refused("teams:create", "Not A Name")
    assert "team 'elsewhere' not found" in ada.refused(
        "members:add", "cy@example.com", "-t", "elsewhere"
    )
    # The platform's audit trail records team changes and team apps with who made them.
    platform = controller.cli("audit", "--platform", "--json", check=True).stdout.splitlines()
    actions = [(e["actor"], e["action"], e.get("detail", "")) for e in map(json.loads, platform)]
    assert ("ada@example.com", "CreateTeam", "ops") in actions
    assert ("bob@example.com", "CreateApp", "ops-tool (team ops)") in actions
    assert ("ada@example.com", "SetTeamMember", "bob@example.com as admin in ops") in actions
    assert ("bob@example.com", "DestroyTeam", "ops") in actions


def test_a_user_who_is_a_teams_last_admin_cannot_be_removed(
    controller: ControllerProcess, crew: tuple[Person, Person, Person]
) -> None:
    ada, _, _ = crew
    ada.ok("teams:create", "solo")
    ada.ok("members:add", "cy@example.com", "--role", "viewer", "-t", "solo")
    refused = controller.cli("users:remove", "ada@example.com", "--confirm", "ada@example.com")
    assert refused.returncode != 0 and "last admin of team 'solo'" in refused.stderr
    # cy leaves with her account: the team no longer lists her.
    controller.cli("users:remove", "cy@example.com", "--confirm", "cy@example.com", check=True)
    members = json.loads(ada.ok("members", "-t", "solo", "--json"))
    assert [m["email"] for m in members] == ["ada@example.com"]
