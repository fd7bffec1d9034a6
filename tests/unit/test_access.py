"""The access rules: who may call what on which app (controller/core/access.py)."""

from __future__ import annotations

import pytest

from controller.core import access, passwords
from controller.core.access import Grant, Identity, Permission, TeamRole, TokenScope, decide
from controller.core.throttle import LoginThrottle
from slipway import errors
from slipway.clock import FakeClock
from slipway.v1 import platform_pb2

ADA = Identity(user="ada@example.com", token_name="login ada@example.com", admin=False)
ADMIN = Identity(user="root@example.com", token_name="t", admin=True)
OPERATOR = Identity(user="", token_name="admin", admin=True)


def collaborator(*names: str) -> Grant:
    return Grant(permissions=access.parse_permissions(list(names)))


def test_every_rpc_of_the_service_has_a_rule() -> None:
    service = platform_pb2.DESCRIPTOR.services_by_name["PlatformService"]
    assert {m.name for m in service.methods} == set(access.RULES)


def test_a_method_without_a_rule_is_refused() -> None:
    with pytest.raises(errors.PermissionDenied, match="no access rule"):
        decide(ADMIN, "DropEverything", "", None)


def test_view_reads_but_cannot_deploy_scale_or_read_config_values() -> None:
    view = collaborator("view")
    decide(ADA, "GetApp", "demo", view)
    decide(ADA, "ListReleases", "demo", view)
    for method, needed in [
        ("CreateRelease", "deploy"),
        ("UploadSource", "deploy"),
        ("ScaleFormation", "operate"),
        ("GetConfigVars", "operate"),
        ("StreamLogs", "operate"),
        ("DestroyApp", "manage"),
    ]:
        with pytest.raises(errors.PermissionDenied, match=f"lacks the {needed} permission") as info:
            decide(ADA, method, "demo", view)
        assert info.value.reason == "missing_permission"
        assert "slipway access:update ada@example.com" in info.value.message


def test_operate_scales_but_does_not_destroy() -> None:
    operate = collaborator("operate")
    decide(ADA, "ScaleFormation", "demo", operate)
    decide(ADA, "RunDyno", "demo", operate)
    with pytest.raises(errors.PermissionDenied, match="manage"):
        decide(ADA, "DestroyApp", "demo", operate)


def test_the_owner_and_admins_may_do_everything_to_an_app() -> None:
    owner = Grant(owner=True)
    for method, rule in access.RULES.items():
        if rule.needs is not None:
            decide(ADA, method, "demo", owner)
            decide(ADMIN, method, "demo", None)
            decide(OPERATOR, method, "demo", None)


def test_an_app_without_access_is_not_found_rather_than_forbidden() -> None:
    with pytest.raises(errors.NotFound, match="app 'theirs' not found"):
        decide(ADA, "GetApp", "theirs", None)


def test_platform_calls_are_for_admins() -> None:
    for method in ("ListNodes", "DrainNode", "ListUsers", "CreateUser", "RemoveUser"):
        with pytest.raises(errors.PermissionDenied, match="for platform admins"):
            decide(ADA, method, "", None)
        decide(ADMIN, method, "", None)


def test_token_scopes_narrow_what_the_account_may_do() -> None:
    reader = Identity(ADA.user, "ci", admin=False, scope=TokenScope.READ)
    decide(reader, "GetApp", "demo", Grant(owner=True))
    with pytest.raises(errors.PermissionDenied, match="read-only"):
        decide(reader, "ScaleFormation", "demo", Grant(owner=True))
    writer = Identity(ADA.user, "deploys", admin=False, scope=TokenScope.WRITE)
    decide(writer, "CreateRelease", "demo", Grant(owner=True))
    with pytest.raises(errors.PermissionDenied, match="accounts and access"):
        decide(writer, "AddCollaborator", "demo", Grant(owner=True))
    admin_reader = Identity("root@example.com", "r", admin=True, scope=TokenScope.READ)
    with pytest.raises(errors.PermissionDenied, match="read-only"):
        decide(admin_reader, "DrainNode", "", None)


def test_logging_in_needs_no_token() -> None:
    anonymous = Identity("", "", admin=False, scope=TokenScope.READ)
    decide(anonymous, "Login", "", None)


def test_permissions_parse_from_lists_and_commas_with_view_always() -> None:
    assert access.parse_permissions(["deploy,operate"]) == {
        Permission.VIEW,
        Permission.DEPLOY,
        Permission.OPERATE,
    }
    assert access.parse_permissions([]) == {Permission.VIEW}
    with pytest.raises(errors.InvalidArgument, match="unknown permission 'admin'"):
        access.parse_permissions(["view,admin"])


def test_team_roles_give_permissions_on_the_teams_apps() -> None:
    member = access.grant_of(owner=False, granted=None, role=TeamRole.MEMBER)
    decide(ADA, "CreateRelease", "shop", member)
    decide(ADA, "ScaleFormation", "shop", member)
    with pytest.raises(errors.PermissionDenied, match="lacks the manage permission"):
        decide(ADA, "DestroyApp", "shop", member)
    viewer = access.grant_of(owner=False, granted=None, role=TeamRole.VIEWER)
    decide(ADA, "GetConfigVarNames", "shop", viewer)
    with pytest.raises(errors.PermissionDenied, match="lacks the operate permission"):
        decide(ADA, "GetConfigVars", "shop", viewer)
    # A collaborator's grant adds to the role's.
    both = access.grant_of(
        owner=False, granted=access.parse_permissions(["manage"]), role=TeamRole.VIEWER
    )
    decide(ADA, "DestroyApp", "shop", both)
    admin = access.grant_of(owner=False, granted=None, role=TeamRole.ADMIN)
    decide(ADA, "DestroyApp", "shop", admin)
    assert access.grant_of(owner=False, granted=None, role=None) is None


def test_team_calls_need_a_role_in_the_team() -> None:
    decide(ADA, "ListTeamMembers", "", None, team="core", role=TeamRole.VIEWER)
    with pytest.raises(errors.PermissionDenied, match="needs the admin role") as info:
        decide(ADA, "SetTeamMember", "", None, team="core", role=TeamRole.MEMBER)
    assert info.value.reason == "missing_role"
    assert "slipway members:set ada@example.com --role admin -t core" in info.value.message
    with pytest.raises(errors.NotFound, match="team 'core' not found"):
        decide(ADA, "ListTeamMembers", "", None, team="core", role=None)
    with pytest.raises(errors.InvalidArgument, match="no team given"):
        decide(ADA, "ListTeamMembers", "", None)
    decide(ADMIN, "DestroyTeam", "", None, team="core", role=None)


def test_apps_are_made_in_a_team_by_its_members_not_its_viewers() -> None:
    decide(ADA, "CreateApp", "", None)  # one of her own
    decide(ADA, "CreateApp", "", None, team="core", role=TeamRole.MEMBER)
    with pytest.raises(errors.PermissionDenied, match="viewer of team 'core'"):
        decide(ADA, "CreateApp", "", None, team="core", role=TeamRole.VIEWER)
    with pytest.raises(errors.NotFound, match="team 'other' not found"):
        decide(ADA, "CreateApp", "", None, team="other", role=None)


def test_roles_parse_with_a_clear_error() -> None:
    assert access.parse_role(" Admin ") is TeamRole.ADMIN
    with pytest.raises(errors.InvalidArgument, match="choose from viewer, member, admin"):
        access.parse_role("owner")


# -- login throttling ---------------------------------------------------------------


def test_failures_past_the_free_ones_wait_longer_each_time_up_to_the_cap() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock, free=3, base=1.0, cap=8.0)
    waits = []
    for _ in range(8):
        throttle.failed("account:ada")
        waits.append(throttle.wait("account:ada"))
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8]
    clock.advance(8)
    assert throttle.wait("account:ada") == 0  # the right password can be tried again


def test_a_success_clears_that_account_only() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock, free=1, base=5.0)
    for _ in range(3):
        throttle.failed("ada@example.com", "bob@example.com")
    assert throttle.wait("ada@example.com") > 0
    clock.advance(30)
    throttle.succeeded("ada@example.com")
    throttle.failed("ada@example.com")  # her first miss since: free again
    throttle.failed("bob@example.com")
    assert throttle.wait("ada@example.com") == 0
    assert throttle.wait("bob@example.com") > 0


def test_the_throttle_forgets_keys_no_longer_waiting_when_full() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock, free=0, base=1.0, max_keys=10)
    for n in range(10):
        throttle.failed(f"address:10.0.0.{n}")
    clock.advance(5)
    throttle.failed("address:10.0.1.1")
    assert len(throttle._failures) == 1


# -- passwords ----------------------------------------------------------------------


def test_a_password_digest_checks_the_password_and_nothing_else() -> None:
    stored = passwords.digest("correct horse", n=2**10)
    assert stored.startswith("scrypt$1024$8$1$")
    assert "correct horse" not in stored
    assert passwords.verify("correct horse", stored)
    assert not passwords.verify("correct horsE", stored)
    assert not passwords.verify("correct horse", "")
    assert not passwords.verify("correct horse", "md5$abc")
    assert passwords.digest("correct horse", n=2**10) != stored  # a new salt each time


def test_short_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        passwords.check_new("short")


def test_the_app_of_a_request_is_found_in_its_fields_or_its_first_part() -> None:
    from controller.api.endpoint import _app_of
    from slipway.v1 import platform_pb2 as pb

    assert _app_of(pb.GetAppRequest(app="demo")) == "demo"
    upload = pb.UploadSourceRequest(metadata=pb.UploadSourceMetadata(app="demo", size=1))
    assert _app_of(upload) == "demo"
    assert _app_of(pb.RunDynoRequest(start=pb.RunDynoStart(app="demo"))) == "demo"
    assert _app_of(pb.UploadSourceRequest(chunk=b"x")) == ""
    assert _app_of(pb.ListAppsRequest()) == ""


def test_audit_details_name_what_changed_but_never_a_secret() -> None:
    from controller.core.audit import detail_of
    from slipway.v1 import platform_pb2 as pb

    config = pb.UpdateConfigVarsRequest(app="a", set={"TOKEN": "hunter22"}, unset=["OLD"])
    assert detail_of("UpdateConfigVars", config) == "set TOKEN unset OLD"
    drain = pb.AddLogDrainRequest(app="a", url="https://user:pass@logs.example.com/x")
    assert "pass" not in detail_of("AddLogDrain", drain)
    scale = pb.ScaleFormationRequest(
        app="a",
        changes=[
            pb.FormationChange(type="web", quantity=2),
            pb.FormationChange(type="w", delta=-1),
        ],
    )
    assert detail_of("ScaleFormation", scale) == "web=2 w-1"
    assert detail_of("GetApp", pb.GetAppRequest(app="a")) == ""
