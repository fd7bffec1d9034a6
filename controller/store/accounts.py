"""Accounts and access in etcd: users, and collaborators of apps.

Users live under ``users/{email}``, a collaborator's permissions on an app
under ``access/{app}/{email}`` (removed with the app). The app's owner is in
its record (``AppRecord.owner``, or ``AppRecord.team`` for a team's app, whose
members are in controller/store/teams.py). What the records allow is decided in
controller/core/access.py; this module only reads and writes them.
"""

from __future__ import annotations

import asyncio
import functools

from controller.core import access, passwords, validation
from controller.core.access import Grant, Permission
from controller.core.models import AppRecord, CollaboratorRecord, TokenRecord, UserRecord
from controller.store.teams import Teams
from slipway import errors
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys


class Accounts:
    def __init__(self, etcd: Etcd, keys: Keys, *, clock: Clock = SystemClock()) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock
        self.teams = Teams(etcd, keys, clock=clock)

    # -- users -----------------------------------------------------------------

    async def create_user(self, email: str, password: str | None, *, admin: bool) -> UserRecord:
        address = validation.email(email)
        stored = ""
        if password is not None:
            try:
                passwords.check_new(password)
            except ValueError as exc:
                raise errors.InvalidArgument(str(exc), reason="weak_password") from None
            stored = await asyncio.to_thread(passwords.digest, password)
        record = UserRecord(
            email=address, created_at=self.clock.now(), admin=admin, password=stored
        )
        tx = self.etcd.tx
        key = self.keys.user(address)
        created = await self.etcd.txn(
            compare=[tx.version(key) == 0], success=[tx.put(key, record.encode())]
        )
        if not created:
            raise errors.AlreadyExists(f"user {address} already exists", reason="user_exists")
        return record

    async def get_user(self, email: str) -> UserRecord | None:
        kv = await self.etcd.get(self.keys.user(email))
        return UserRecord.decode(kv.value) if kv else None

    async def list_users(self) -> list[UserRecord]:
        kvs, _ = await self.etcd.get_prefix(self.keys.users())
        return sorted((UserRecord.decode(kv.value) for kv in kvs), key=lambda u: u.email)

    async def check_password(self, email: str, password: str) -> UserRecord | None:
        """The user when ``password`` is theirs; None otherwise (unknown user included)."""
        user = await self.get_user(validation.email(email))
        if user is None or not user.password:
            # Spend the same time as a real check, so timing does not tell who exists.
            await asyncio.to_thread(passwords.verify, password, _dummy_digest())
            return None
        ok = await asyncio.to_thread(passwords.verify, password, user.password)
        return user if ok else None

    async def remove_user(self, email: str) -> int:
        """Delete the account, its tokens and its access to apps; refuse while it owns apps.
        Returns how many tokens stopped working."""
        address = validation.email(email)
        if await self.get_user(address) is None:
            raise errors.NotFound(f"no user {address}", reason="user_not_found")
        apps, _ = await self.etcd.get_prefix(self.keys.apps())
        owned = sorted(r.name for kv in apps if (r := AppRecord.decode(kv.value)).owner == address)
        if owned:
            raise errors.FailedPrecondition(
                f"{address} owns {', '.join(owned)}; destroy those apps first",
                reason="owns_apps",
            )
        await self.teams.forget_user(address)
        tokens, _ = await self.etcd.get_prefix(self.keys.tokens())
        revoked = 0
        for kv in tokens:
            if TokenRecord.decode(kv.value).user == address:
                revoked += int(await self.etcd.delete(kv.key))
        grants, _ = await self.etcd.get_prefix(self.keys.collaborators())
        for kv in grants:
            if CollaboratorRecord.decode(kv.value).email == address:
                await self.etcd.delete(kv.key)
        await self.etcd.delete(self.keys.user(address))
        return revoked

    # -- access to apps ----------------------------------------------------------

    async def grant(self, app: str, email: str) -> Grant | None:
        """What ``email`` holds on ``app`` as its owner, a collaborator or a member
        of its team; None when nothing (or no such app)."""
        kv = await self.etcd.get(self.keys.app(app))
        if kv is None or not email:
            return None
        record = AppRecord.decode(kv.value)
        got = await self.etcd.get(self.keys.collaborator(app, email))
        granted = None
        if got is not None:
            collaborator = CollaboratorRecord.decode(got.value)
            granted = frozenset(Permission(p) for p in collaborator.permissions)
        return access.grant_of(
            owner=record.owner == email,
            granted=granted,
            role=await self.teams.role(record.team, email),
        )

    async def visible_apps(self, email: str, apps: list[AppRecord]) -> list[AppRecord]:
        """The apps ``email`` owns, collaborates on or sees through a team, of ``apps``."""
        kvs, _ = await self.etcd.get_prefix(self.keys.collaborators())
        shared = {
            kv.key.decode().rsplit("/", 2)[-2]
            for kv in kvs
            if CollaboratorRecord.decode(kv.value).email == email
        }
        teams = await self.teams.memberships(email)
        return [
            a for a in apps if a.owner == email or a.name in shared or (a.team and a.team in teams)
        ]

    async def collaborators(self, app: AppRecord) -> list[CollaboratorRecord]:
        """Everyone with access to ``app``, the owner first (all permissions)."""
        kvs, _ = await self.etcd.get_prefix(self.keys.collaborators(app.name))
        found = sorted((CollaboratorRecord.decode(kv.value) for kv in kvs), key=lambda c: c.email)
        if app.owner:
            everything = sorted(p.value for p in access.ALL_PERMISSIONS)
            found.insert(0, CollaboratorRecord(app.owner, everything, app.created_at, "owner"))
        return found

    async def set_collaborator(
        self, app: AppRecord, email: str, permissions: frozenset[Permission], *, by: str, new: bool
    ) -> CollaboratorRecord:
        """Add (``new``) or update a collaborator of ``app``."""
        address = validation.email(email)
        if address == app.owner:
            raise errors.FailedPrecondition(
                f"{address} owns {app.name} and holds every permission already",
                reason="is_owner",
            )
        if await self.get_user(address) is None:
            raise errors.NotFound(
                f"no user {address}; an admin adds people with `slipway users:create`",
                reason="user_not_found",
            )
        key = self.keys.collaborator(app.name, address)
        record = CollaboratorRecord(
            email=address,
            permissions=sorted(p.value for p in permissions),
            created_at=self.clock.now(),
            added_by=by,
        )
        tx = self.etcd.tx
        guard = tx.version(key) == 0 if new else tx.version(key) > 0
        if not await self.etcd.txn(compare=[guard], success=[tx.put(key, record.encode())]):
            if new:
                raise errors.AlreadyExists(
                    f"{address} already has access to {app.name}; use access:update",
                    reason="collaborator_exists",
                )
            raise errors.NotFound(
                f"{address} has no access to {app.name}; use access:add",
                reason="collaborator_not_found",
            )
        return record

    async def remove_collaborator(self, app: str, email: str) -> None:
        address = validation.email(email)
        if not await self.etcd.delete(self.keys.collaborator(app, address)):
            raise errors.NotFound(
                f"{address} has no access to {app}", reason="collaborator_not_found"
            )


@functools.cache
def _dummy_digest() -> str:
    """A digest of no one's password, checked when the account does not exist."""
    return passwords.digest("no such account, no such password")
