"""Teams in etcd: ``teams/{team}`` and each member's role under
``members/{team}/{email}``. What a role allows is decided in
controller/core/access.py; this module reads and writes the records and keeps
the one rule of their own: a team always has an admin.
"""

from __future__ import annotations

from aetcd.utils import prefix_range_end

from controller.core import validation
from controller.core.access import TeamRole
from controller.core.models import AppRecord, MemberRecord, TeamRecord
from slipway import errors
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys


class Teams:
    def __init__(self, etcd: Etcd, keys: Keys, *, clock: Clock = SystemClock()) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock

    async def create(self, name: str, creator: str) -> TeamRecord:
        """A new team with ``creator`` as its first admin."""
        team = validation.team_name(name)
        now = self.clock.now()
        record = TeamRecord(name=team, created_at=now, created_by=creator)
        member = MemberRecord(
            email=creator, role=TeamRole.ADMIN.value, added_at=now, added_by=creator
        )
        tx = self.etcd.tx
        key = self.keys.team(team)
        created = await self.etcd.txn(
            compare=[tx.version(key) == 0],
            success=[
                tx.put(key, record.encode()),
                tx.put(self.keys.member(team, creator), member.encode()),
            ],
        )
        if not created:
            raise errors.AlreadyExists(
                f"team {team!r} already exists; choose another name", reason="team_exists"
            )
        return record

    async def get(self, name: str) -> TeamRecord:
        if not name:
            raise errors.InvalidArgument("no team given; pass -t TEAM", reason="missing_team")
        kv = await self.etcd.get(self.keys.team(validation.team_name(name)))
        if kv is None:
            raise errors.NotFound(f"team {name!r} not found", reason="team_not_found")
        return TeamRecord.decode(kv.value)

    async def all(self) -> list[TeamRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.teams())
        return sorted((TeamRecord.decode(kv.value) for kv in kvs), key=lambda t: t.name)

    async def role(self, team: str, email: str) -> TeamRole | None:
        """``email``'s role in ``team``; None when not a member (or no such team)."""
        if not team or not email:
            return None
        kv = await self.etcd.get(self.keys.member(team, email))
        return TeamRole(MemberRecord.decode(kv.value).role) if kv else None

    async def members(self, team: str) -> list[MemberRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.members(team))
        return sorted((MemberRecord.decode(kv.value) for kv in kvs), key=lambda m: m.email)

    async def memberships(self, email: str) -> dict[str, TeamRole]:
        """The teams ``email`` belongs to, with the role in each."""
        kvs, _ = await self.etcd.get_prefix(self.keys.members())
        found: dict[str, TeamRole] = {}
        for kv in kvs:
            record = MemberRecord.decode(kv.value)
            if record.email == email:
                team = kv.key.decode().rsplit("/", 2)[-2]
                found[team] = TeamRole(record.role)
        return found

    async def set_member(
        self, team: str, email: str, role: TeamRole, *, by: str, new: bool
    ) -> MemberRecord:
        """Add (``new``) or change the role of a member; a team keeps an admin."""
        await self.get(team)
        address = validation.email(email)
        key = self.keys.member(team, address)
        record = MemberRecord(
            email=address, role=role.value, added_at=self.clock.now(), added_by=by
        )
        tx = self.etcd.tx
        if new:
            if not await self.etcd.txn(
                compare=[tx.version(key) == 0], success=[tx.put(key, record.encode())]
            ):
                raise errors.AlreadyExists(
                    f"{address} is already in team {team!r}; use members:set to change the role",
                    reason="member_exists",
                )
            return record
        current = await self.etcd.get(key)
        if current is None:
            raise errors.NotFound(
                f"{address} is not in team {team!r}; use members:add", reason="member_not_found"
            )
        before = MemberRecord.decode(current.value)
        record.added_at, record.added_by = before.added_at, before.added_by
        if before.role == TeamRole.ADMIN and role is not TeamRole.ADMIN:
            await self._keep_an_admin(team, address)
        # Compared on the key's revision, so two changes at once cannot both
        # demote the last two admins.
        if not await self.etcd.txn(
            compare=[tx.mod(key) == current.mod_revision], success=[tx.put(key, record.encode())]
        ):
            raise errors.Conflict(f"{address}'s role in {team!r} changed meanwhile; try again")
        return record

    async def remove_member(self, team: str, email: str) -> None:
        await self.get(team)
        address = validation.email(email)
        key = self.keys.member(team, address)
        current = await self.etcd.get(key)
        if current is None:
            raise errors.NotFound(f"{address} is not in team {team!r}", reason="member_not_found")
        if MemberRecord.decode(current.value).role == TeamRole.ADMIN:
            await self._keep_an_admin(team, address)
        tx = self.etcd.tx
        if not await self.etcd.txn(
            compare=[tx.mod(key) == current.mod_revision], success=[tx.delete(key)]
        ):
            raise errors.Conflict(f"{address}'s role in {team!r} changed meanwhile; try again")

    async def _keep_an_admin(self, team: str, leaving: str) -> None:
        admins = [
            m.email
            for m in await self.members(team)
            if m.role == TeamRole.ADMIN and m.email != leaving
        ]
        if not admins:
            raise errors.FailedPrecondition(
                f"{leaving} is the last admin of team {team!r}; make another member admin first "
                f"(slipway members:set EMAIL --role admin -t {team})",
                reason="last_admin",
            )

    async def destroy(self, team: str, confirm: str, apps: list[AppRecord]) -> None:
        """Delete the team and its memberships; refused while it owns any of ``apps``."""
        await self.get(team)
        if confirm != team:
            raise errors.FailedPrecondition(
                f"destroying team {team!r} needs confirmation: pass --confirm {team}",
                reason="confirmation_required",
            )
        owned = sorted(a.name for a in apps if a.team == team)
        if owned:
            raise errors.FailedPrecondition(
                f"team {team!r} owns {', '.join(owned)}; destroy those apps first",
                reason="owns_apps",
            )
        tx = self.etcd.tx
        prefix = self.keys.members(team)
        await self.etcd.txn(
            compare=[tx.version(self.keys.team(team)) > 0],
            success=[
                tx.delete(self.keys.team(team)),
                tx.delete(prefix, range_end=prefix_range_end(prefix)),
            ],
        )

    async def forget_user(self, email: str) -> None:
        """Drop ``email`` from every team; refused when it is a team's last admin."""
        teams = await self.memberships(email)
        for team, role in teams.items():
            if role is TeamRole.ADMIN:
                await self._keep_an_admin(team, email)
        for team in teams:
            await self.etcd.delete(self.keys.member(team, email))
