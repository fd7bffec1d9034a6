"""The team RPCs of PlatformService (mixed into controller.api.platform.PlatformAPI):
teams, and their members' roles. Who may call them is decided by the wrappers
(controller/api/endpoint.py) from the rules in controller/core/access.py."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from controller.api.accounts_api import person
from controller.api.convert import timestamp
from controller.api.endpoint import unary
from controller.core import access, validation
from controller.core.access import Identity, TeamRole
from controller.core.models import MemberRecord, TeamRecord
from controller.store.accounts import Accounts
from controller.store.state import State
from slipway import errors
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext


def member_message(record: MemberRecord) -> pb.TeamMember:
    return pb.TeamMember(
        email=record.email,
        role=record.role,
        added_at=timestamp(record.added_at),
        added_by=record.added_by,
    )


class TeamRPCs:
    accounts: Accounts
    state: State

    def _team_message(
        self, record: TeamRecord, role: TeamRole | None, members: int, apps: int
    ) -> pb.Team:
        return pb.Team(
            name=record.name,
            created_at=timestamp(record.created_at),
            role=role.value if role else "",
            members=members,
            apps=apps,
        )

    @unary
    async def ListTeams(
        self, request: pb.ListTeamsRequest, context: Ctx, who: Identity
    ) -> pb.ListTeamsResponse:
        teams = self.accounts.teams
        mine = await teams.memberships(who.user) if who.user else {}
        records = [t for t in await teams.all() if who.admin or t.name in mine]
        apps = await self.state.list_apps()
        out = []
        for record in records:
            count = len(await teams.members(record.name))
            owned = sum(1 for a in apps if a.team == record.name)
            out.append(self._team_message(record, mine.get(record.name), count, owned))
        return pb.ListTeamsResponse(teams=out)

    @unary
    async def CreateTeam(
        self, request: pb.CreateTeamRequest, context: Ctx, who: Identity
    ) -> pb.CreateTeamResponse:
        record = await self.accounts.teams.create(request.team, person(who))
        return pb.CreateTeamResponse(team=self._team_message(record, TeamRole.ADMIN, 1, 0))

    @unary
    async def DestroyTeam(
        self, request: pb.DestroyTeamRequest, context: Ctx, who: Identity
    ) -> pb.DestroyTeamResponse:
        apps = await self.state.list_apps()
        await self.accounts.teams.destroy(request.team, request.confirm, apps)
        return pb.DestroyTeamResponse()

    @unary
    async def ListTeamMembers(
        self, request: pb.ListTeamMembersRequest, context: Ctx, who: Identity
    ) -> pb.ListTeamMembersResponse:
        await self.accounts.teams.get(request.team)
        members = await self.accounts.teams.members(request.team)
        return pb.ListTeamMembersResponse(members=[member_message(m) for m in members])

    @unary
    async def SetTeamMember(
        self, request: pb.SetTeamMemberRequest, context: Ctx, who: Identity
    ) -> pb.SetTeamMemberResponse:
        role = access.parse_role(request.role or "member")
        address = validation.email(request.email)
        if await self.accounts.get_user(address) is None:
            raise errors.NotFound(
                f"no user {address}; an admin adds people with `slipway users:create`",
                reason="user_not_found",
            )
        record = await self.accounts.teams.set_member(
            request.team, address, role, by=who.actor, new=not request.update
        )
        return pb.SetTeamMemberResponse(member=member_message(record))

    @unary
    async def RemoveTeamMember(
        self, request: pb.RemoveTeamMemberRequest, context: Ctx, who: Identity
    ) -> pb.RemoveTeamMemberResponse:
        await self.accounts.teams.remove_member(request.team, request.email)
        return pb.RemoveTeamMemberResponse()
