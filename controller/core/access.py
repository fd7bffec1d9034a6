"""Who may call what: the rule of every PlatformService RPC, and the decision.

People hold permissions on apps, with Heroku's names:

    view      read the app, its releases, dynos, builds and config var names
    deploy    builds, releases, rollback, buildpacks
    operate   scale, restart, stop, run, logs, config var values
    manage    config changes, log drains, access, destroy

An app's owner holds all four; a collaborator those granted (``view`` always).
An app may be owned by a team instead of a person: each member of the team
holds permissions on all its apps by role (:data:`ROLE_PERMISSIONS`), on top
of anything granted them as a collaborator:

    admin     all four on every app of the team, and the team's membership
    member    view, deploy, operate; may create apps in the team
    viewer    view

Platform admins (and operators' tokens from ``slipway-controller tokens
create``) may do everything, and they alone manage users and nodes.

A token's scope narrows what its holder may do: ``read`` calls nothing that
changes anything, ``write`` changes apps but not accounts (users, tokens,
access), ``global`` is all its user may do.

:func:`decide` is the whole decision; :data:`RULES` names the rule of every
RPC. An RPC missing from the table is refused (fail closed), and a unit test
checks that the table covers the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from slipway import errors


class Permission(StrEnum):
    VIEW = "view"
    DEPLOY = "deploy"
    OPERATE = "operate"
    MANAGE = "manage"


ALL_PERMISSIONS = frozenset(Permission)


class TeamRole(StrEnum):
    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {TeamRole.VIEWER: 0, TeamRole.MEMBER: 1, TeamRole.ADMIN: 2}

ROLE_PERMISSIONS: dict[TeamRole, frozenset[Permission]] = {
    TeamRole.ADMIN: ALL_PERMISSIONS,
    TeamRole.MEMBER: frozenset({Permission.VIEW, Permission.DEPLOY, Permission.OPERATE}),
    TeamRole.VIEWER: frozenset({Permission.VIEW}),
}


class TokenScope(StrEnum):
    GLOBAL = "global"
    WRITE = "write"
    READ = "read"


@dataclass(frozen=True)
class Rule:
    # The permission the caller needs on the request's app; None: no app is involved.
    needs: Permission | None = None
    admin: bool = False  # platform admins only
    writes: bool = True  # refused to a read-scoped token
    account: bool = False  # changes accounts or access: refused to a write-scoped token
    public: bool = False  # no token at all (logging in)
    # The role the caller needs in the request's team; None: no team is involved.
    team: TeamRole | None = None
    team_optional: bool = False  # the team is checked only when the request names one


def _read(needs: Permission | None = Permission.VIEW) -> Rule:
    return Rule(needs=needs, writes=False)


def _change(needs: Permission) -> Rule:
    return Rule(needs=needs)


RULES: dict[str, Rule] = {
    # apps
    "CreateApp": Rule(team=TeamRole.MEMBER, team_optional=True),
    "ListApps": _read(None),  # lists only the apps the caller may view
    "GetApp": _read(),
    "DestroyApp": _change(Permission.MANAGE),
    # config vars: values are secrets, so reading them is `operate`
    "GetConfigVars": _read(Permission.OPERATE),
    "GetConfigVarNames": _read(),
    "UpdateConfigVars": _change(Permission.MANAGE),
    # releases
    "ListReleases": _read(),
    "GetRelease": _read(),
    "RollbackRelease": _change(Permission.DEPLOY),
    "CreateRelease": _change(Permission.DEPLOY),
    # formation and dynos
    "GetFormation": _read(),
    "ScaleFormation": _change(Permission.OPERATE),
    "ListSizes": _read(None),
    "ListDynos": _read(),
    "RestartDynos": _change(Permission.OPERATE),
    "StopDyno": _change(Permission.OPERATE),
    "RunDyno": _change(Permission.OPERATE),
    "StreamLogs": Rule(needs=Permission.OPERATE, writes=False),
    # builds
    "UploadSource": _change(Permission.DEPLOY),
    "ListBuilds": _read(),
    "GetBuild": _read(),
    "StreamBuildOutput": _read(),
    "SetBuildpacks": _change(Permission.DEPLOY),
    "SetStack": _change(Permission.DEPLOY),
    "PurgeBuildCache": _change(Permission.DEPLOY),
    # log drains
    "ListLogDrains": _read(),
    "AddLogDrain": _change(Permission.MANAGE),
    "RemoveLogDrain": _change(Permission.MANAGE),
    # custom domains and certificates: what the app answers at, and as whom
    "ListDomains": _read(),
    "GetDomain": _read(),
    "AddDomain": _change(Permission.MANAGE),
    "RemoveDomain": _change(Permission.MANAGE),
    "ListCertificates": _read(),
    "GetCertificate": _read(),
    "AddCertificate": _change(Permission.MANAGE),
    "RemoveCertificate": _change(Permission.MANAGE),
    "GetAutoCerts": _read(),
    "EnableAutoCerts": _change(Permission.MANAGE),
    "DisableAutoCerts": _change(Permission.MANAGE),
    # scheduler jobs: a standing order to run commands with the app's secrets
    "ListSchedulerJobs": _read(),
    "CreateSchedulerJob": _change(Permission.MANAGE),
    "RemoveSchedulerJob": _change(Permission.MANAGE),
    # a backup holds every row of the database: as secret as its URL
    "DownloadAddonBackup": _read(Permission.OPERATE),
    # add-ons (config var values come out through GetConfigVars only)
    "ListAddonServices": _read(None),
    "ListAddons": _read(),
    "GetAddon": _read(),
    "CreateAddon": _change(Permission.MANAGE),
    # also needs manage on the add-on's own app (checked by the RPC with Access.check)
    "AttachAddon": _change(Permission.MANAGE),
    "DetachAddon": _change(Permission.MANAGE),
    "UpgradeAddon": _change(Permission.MANAGE),
    "DestroyAddon": _change(Permission.MANAGE),
    "RetryAddon": _change(Permission.MANAGE),
    "GetAddonDetails": _read(),
    "RunAddonAction": _change(Permission.MANAGE),
    # access to an app
    "ListCollaborators": _read(),
    "AddCollaborator": Rule(needs=Permission.MANAGE, account=True),
    "UpdateCollaborator": Rule(needs=Permission.MANAGE, account=True),
    "RemoveCollaborator": Rule(needs=Permission.MANAGE, account=True),
    # teams
    "ListTeams": _read(None),  # lists only the caller's teams
    "CreateTeam": Rule(account=True),
    "DestroyTeam": Rule(team=TeamRole.ADMIN, account=True),
    "ListTeamMembers": Rule(team=TeamRole.VIEWER, writes=False),
    "SetTeamMember": Rule(team=TeamRole.ADMIN, account=True),
    "RemoveTeamMember": Rule(team=TeamRole.ADMIN, account=True),
    "ListAuditEvents": _read(),
    "ListPlatformAuditEvents": Rule(admin=True, writes=False),
    # the caller itself
    "WhoAmI": _read(None),
    "ListAuthorizations": _read(None),
    "CreateAuthorization": Rule(account=True),
    "RevokeAuthorization": Rule(account=True),
    "Login": Rule(public=True),
    # the platform
    "ListNodes": Rule(admin=True, writes=False),
    "DrainNode": Rule(admin=True),
    "ListUsers": Rule(admin=True, writes=False),
    "CreateUser": Rule(admin=True, account=True),
    "RemoveUser": Rule(admin=True, account=True),
}


@dataclass(frozen=True)
class Identity:
    """Who is calling, as far as permissions go."""

    user: str  # an email; "" for an operator's token
    token_name: str
    admin: bool
    scope: TokenScope = TokenScope.GLOBAL

    @property
    def actor(self) -> str:
        """How the caller appears in releases and the app's log."""
        return self.user or self.token_name


@dataclass(frozen=True)
class Grant:
    """What a caller holds on one app."""

    owner: bool = False
    permissions: frozenset[Permission] = field(default_factory=frozenset)

    def holds(self, needed: Permission) -> bool:
        return self.owner or needed is Permission.VIEW or needed in self.permissions


def rule_of(method: str) -> Rule:
    rule = RULES.get(method)
    if rule is None:
        raise errors.PermissionDenied(
            f"{method} has no access rule; the controller refuses it", reason="no_rule"
        )
    return rule


def grant_of(
    *, owner: bool, granted: frozenset[Permission] | None, role: TeamRole | None
) -> Grant | None:
    """What a person holds on an app: as its owner, as a collaborator (``granted``)
    and as a member of the team that owns it (``role``); None when nothing."""
    if owner:
        return Grant(owner=True, permissions=ALL_PERMISSIONS)
    if granted is None and role is None:
        return None
    held = (granted or frozenset()) | (ROLE_PERMISSIONS[role] if role else frozenset())
    return Grant(permissions=held)


def decide(
    who: Identity,
    method: str,
    app: str,
    grant: Grant | None,
    *,
    team: str = "",
    role: TeamRole | None = None,
) -> None:
    """Return if ``who`` may call ``method`` on ``app`` (``grant``: what it holds
    there, None for none) and on ``team`` (``role``: theirs in it, None for none);
    raise PermissionDenied, or NotFound for an app or team the caller may not
    even view (whether it exists is not the caller's business)."""
    rule = rule_of(method)
    if rule.public:
        return
    if who.scope is TokenScope.READ and rule.writes:
        raise errors.PermissionDenied(
            f"this token is read-only (scope read): {method} changes things; "
            "use a token of scope write or global",
            reason="read_only_token",
        )
    if who.scope is TokenScope.WRITE and rule.account:
        raise errors.PermissionDenied(
            f"this token's scope (write) does not cover accounts and access ({method}); "
            "use a token of scope global",
            reason="scope",
        )
    if rule.admin and not who.admin:
        raise errors.PermissionDenied(
            f"{method} is for platform admins; {who.actor} is not one", reason="not_admin"
        )
    if who.admin:
        return
    _decide_team(who, method, rule, team, role)
    if rule.needs is None:
        return
    if grant is None:
        raise errors.NotFound(f"app {app!r} not found", reason="app_not_found")
    if not grant.holds(rule.needs):
        raise errors.PermissionDenied(
            f"{who.actor} lacks the {rule.needs} permission on app {app!r} ({method}); "
            f"its owner or a manager can grant it: "
            f"slipway access:update {who.actor or 'EMAIL'} --permissions {rule.needs} -a {app}",
            reason="missing_permission",
        )


def _decide_team(who: Identity, method: str, rule: Rule, team: str, role: TeamRole | None) -> None:
    if rule.team is None or (rule.team_optional and not team):
        return
    if not team:
        raise errors.InvalidArgument("no team given; pass -t TEAM", reason="missing_team")
    if role is None:
        raise errors.NotFound(f"team {team!r} not found", reason="team_not_found")
    if role.rank < rule.team.rank:
        raise errors.PermissionDenied(
            f"{who.actor} is a {role} of team {team!r}; {method} needs the {rule.team} role "
            f"or higher; a team admin can change it: "
            f"slipway members:set {who.actor} --role {rule.team} -t {team}",
            reason="missing_role",
        )


def parse_role(value: str) -> TeamRole:
    try:
        return TeamRole(value.strip().lower())
    except ValueError:
        choices = ", ".join(r.value for r in TeamRole)
        raise errors.InvalidArgument(
            f"unknown team role {value!r}; choose from {choices}", reason="bad_role"
        ) from None


def parse_permissions(values: list[str] | tuple[str, ...]) -> frozenset[Permission]:
    """``["deploy", "operate"]`` or ``["deploy,operate"]``; view is always included."""
    out = {Permission.VIEW}
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                out.add(Permission(name))
            except ValueError:
                choices = ", ".join(p.value for p in Permission)
                raise errors.InvalidArgument(
                    f"unknown permission {name!r}; choose from {choices}",
                    reason="bad_permission",
                ) from None
    return frozenset(out)
