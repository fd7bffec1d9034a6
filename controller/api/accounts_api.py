"""The account and access RPCs of PlatformService (mixed into
controller.api.platform.PlatformAPI): who the caller is, logging in, users,
and an app's collaborators. Permissions are checked by the wrappers
(controller/api/endpoint.py) before these run, like every other RPC's."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from controller.api.auth import Access, peer_address
from controller.api.convert import timestamp
from controller.api.endpoint import unary
from controller.core import access
from controller.core.access import Identity, TokenScope
from controller.core.audit import AuditRecord
from controller.core.models import CollaboratorRecord, MemberRecord, TokenRecord, UserRecord
from controller.store.accounts import Accounts
from controller.store.audit import AuditTrail
from controller.store.state import State
from slipway import errors
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext


def user_message(record: UserRecord) -> pb.User:
    return pb.User(
        email=record.email,
        admin=record.admin,
        created_at=timestamp(record.created_at),
        has_password=bool(record.password),
    )


def collaborator_message(record: CollaboratorRecord) -> pb.Collaborator:
    owner = record.added_by == "owner"
    return pb.Collaborator(
        email=record.email,
        permissions=record.permissions,
        owner=owner,
        created_at=timestamp(record.created_at),
        role="owner" if owner else "collaborator",
    )


def team_member_access(record: MemberRecord) -> pb.Collaborator:
    role = access.TeamRole(record.role)
    return pb.Collaborator(
        email=record.email,
        permissions=sorted(p.value for p in access.ROLE_PERMISSIONS[role]),
        created_at=timestamp(record.added_at),
        role=f"team {role.value}",
    )


def authorization(record: TokenRecord) -> pb.Authorization:
    msg = pb.Authorization(
        id=record.id,
        description=record.description,
        scope=record.scope,
        created_at=timestamp(record.created_at),
    )
    if record.expires_at:
        msg.expires_at.CopyFrom(timestamp(record.expires_at))
    return msg


def audit_event(record: AuditRecord) -> pb.AuditEvent:
    return pb.AuditEvent(
        time=timestamp(record.time),
        actor=record.actor,
        token_name=record.token_name,
        source=record.source,
        action=record.action,
        app=record.app,
        detail=record.detail,
    )


def person(who: Identity) -> str:
    if not who.user:
        raise errors.FailedPrecondition(
            "an operator's token has no account; make tokens with "
            "`slipway-controller tokens create`, or log in as a person",
            reason="no_account",
        )
    return who.user


class AccountRPCs:
    access: Access
    audit: AuditTrail | None
    accounts: Accounts
    state: State

    def _log(self, app: str, *messages: str) -> None: ...

    @unary
    async def WhoAmI(
        self, request: pb.WhoAmIRequest, context: Ctx, who: Identity
    ) -> pb.WhoAmIResponse:
        return pb.WhoAmIResponse(
            token_name=who.token_name, email=who.user, admin=who.admin, scope=who.scope.value
        )

    @unary
    async def Login(
        self, request: pb.LoginRequest, context: Ctx, who: Identity
    ) -> pb.LoginResponse:
        token, identity = await self.access.login(
            request.email, request.password, peer_address(context)
        )
        return pb.LoginResponse(
            token=token,
            token_name=identity.token_name,
            email=identity.user,
            admin=identity.admin,
        )

    # the caller's tokens

    @unary
    async def ListAuthorizations(
        self, request: pb.ListAuthorizationsRequest, context: Ctx, who: Identity
    ) -> pb.ListAuthorizationsResponse:
        records = await self.access.tokens.of_user(person(who))
        return pb.ListAuthorizationsResponse(authorizations=[authorization(r) for r in records])

    @unary
    async def CreateAuthorization(
        self, request: pb.CreateAuthorizationRequest, context: Ctx, who: Identity
    ) -> pb.CreateAuthorizationResponse:
        try:
            scope = TokenScope(request.scope or "global")
        except ValueError:
            raise errors.InvalidArgument(
                f"unknown scope {request.scope!r}; choose global, write or read",
                reason="bad_scope",
            ) from None
        user = person(who)
        token, record = await self.access.tokens.create(
            f"authorization {user}",
            user=user,
            scope=scope,
            expires_in=float(request.expires_in_seconds),
            description=request.description,
        )
        return pb.CreateAuthorizationResponse(authorization=authorization(record), token=token)

    @unary
    async def RevokeAuthorization(
        self, request: pb.RevokeAuthorizationRequest, context: Ctx, who: Identity
    ) -> pb.RevokeAuthorizationResponse:
        await self.access.tokens.revoke_of_user(person(who), request.id)
        return pb.RevokeAuthorizationResponse()

    # the audit trail

    @unary
    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Ctx, who: Identity
    ) -> pb.ListAuditEventsResponse:
        await self.state.get_app(request.app)
        return await self._audit_events(request.app, request.limit)

    @unary
    async def ListPlatformAuditEvents(
        self, request: pb.ListPlatformAuditEventsRequest, context: Ctx, who: Identity
    ) -> pb.ListAuditEventsResponse:
        return await self._audit_events("", request.limit)

    async def _audit_events(self, app: str, limit: int) -> pb.ListAuditEventsResponse:
        if self.audit is None:
            raise errors.Unavailable("this controller keeps no audit trail")
        records = await self.audit.read(app, limit if limit > 0 else 100)
        return pb.ListAuditEventsResponse(events=[audit_event(r) for r in records])

    # users

    @unary
    async def ListUsers(
        self, request: pb.ListUsersRequest, context: Ctx, who: Identity
    ) -> pb.ListUsersResponse:
        users = await self.accounts.list_users()
        return pb.ListUsersResponse(users=[user_message(u) for u in users])

    @unary
    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Ctx, who: Identity
    ) -> pb.CreateUserResponse:
        record = await self.accounts.create_user(
            request.email, request.password or None, admin=request.admin
        )
        return pb.CreateUserResponse(user=user_message(record))

    @unary
    async def RemoveUser(
        self, request: pb.RemoveUserRequest, context: Ctx, who: Identity
    ) -> pb.RemoveUserResponse:
        revoked = await self.accounts.remove_user(request.email)
        self.access.forget()
        return pb.RemoveUserResponse(tokens_revoked=revoked)

    # an app's collaborators

    @unary
    async def ListCollaborators(
        self, request: pb.ListCollaboratorsRequest, context: Ctx, who: Identity
    ) -> pb.ListCollaboratorsResponse:
        app = await self.state.get_app(request.app)
        found = {c.email: collaborator_message(c) for c in await self.accounts.collaborators(app)}
        if app.team:
            for member in await self.accounts.teams.members(app.team):
                entry = team_member_access(member)
                also = found.get(member.email)
                if also is not None:  # one line each: what they hold, both ways
                    entry.permissions[:] = sorted({*entry.permissions, *also.permissions})
                    entry.role = f"{entry.role}, {also.role}"
                found[member.email] = entry
        return pb.ListCollaboratorsResponse(collaborators=list(found.values()))

    async def _set(
        self, app_name: str, email: str, permissions: list[str], who: Identity, *, new: bool
    ) -> pb.Collaborator:
        app = await self.state.get_app(app_name)
        wanted = access.parse_permissions(permissions)
        record = await self.accounts.set_collaborator(app, email, wanted, by=who.actor, new=new)
        verb = "Add" if new else "Update"
        self._log(
            app.name,
            f"{verb} access for {record.email} ({', '.join(record.permissions)}) by {who.actor}",
        )
        return collaborator_message(record)

    @unary
    async def AddCollaborator(
        self, request: pb.AddCollaboratorRequest, context: Ctx, who: Identity
    ) -> pb.AddCollaboratorResponse:
        added = await self._set(
            request.app, request.email, list(request.permissions), who, new=True
        )
        return pb.AddCollaboratorResponse(collaborator=added)

    @unary
    async def UpdateCollaborator(
        self, request: pb.UpdateCollaboratorRequest, context: Ctx, who: Identity
    ) -> pb.UpdateCollaboratorResponse:
        updated = await self._set(
            request.app, request.email, list(request.permissions), who, new=False
        )
        return pb.UpdateCollaboratorResponse(collaborator=updated)

    @unary
    async def RemoveCollaborator(
        self, request: pb.RemoveCollaboratorRequest, context: Ctx, who: Identity
    ) -> pb.RemoveCollaboratorResponse:
        await self.accounts.remove_collaborator(request.app, request.email)
        self._log(request.app, f"Remove access for {request.email} by {who.actor}")
        return pb.RemoveCollaboratorResponse()
