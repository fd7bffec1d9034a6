"""etcd's users and roles for Slipway, and turning authentication on.

With ``--client-cert-auth`` etcd takes a client's user from its certificate's
CN (see :mod:`slipway.pki`); the users have no password, so a certificate of
the cluster CA is the only way in. What each may touch, under ``{prefix}``:

    root, controller   role ``root``: everything (the controller creates the
                       role of every node that joins)
    router             role ``router``: read ``routes/``
    node.NAME          role ``node.NAME``: read and write ``nodes/NAME`` and
                       everything under ``status/`` and ``routes/dynos/`` (where
                       the agent keeps its dynos' records under its lease);
                       read ``addongrants/`` (its dynos' firewall openings)
    builder            no user: builders need no etcd

Every function here converges: it adds what is missing and takes away
permissions under ``{prefix}/`` a role should not hold, so running it again is
harmless; permissions under other prefixes (another Slipway sharing the etcd,
or a test's) are left alone. They go
through etcd's Auth API on an ordinary :class:`~slipway.etcd.Etcd` connection
(there is no etcdctl on the hosts), which must be a ``root`` or ``controller``
one once authentication is on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aetcd import rpc
from aetcd.utils import prefix_range_end

from slipway import errors, pki
from slipway.etcd import Etcd
from slipway.keys import Keys

ROOT_ROLE = "root"
ROUTER_ROLE = "router"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, order=True)
class Grant:
    """One permission of a role: ``key`` alone, or ``[key, range_end)``."""

    kind: int  # rpc.Permission.READ, WRITE or READWRITE
    key: bytes
    range_end: bytes = b""

    @classmethod
    def prefix(cls, kind: int, prefix: bytes) -> Grant:
        return cls(kind, prefix, prefix_range_end(prefix))

    def describe(self) -> str:
        what = rpc.Permission.Type.Name(self.kind)  # type: ignore[arg-type]
        where = f"{self.key.decode()}*" if self.range_end else self.key.decode()
        return f"{what} {where}"


def router_grants(prefix: str) -> set[Grant]:
    return {Grant.prefix(rpc.Permission.READ, Keys(prefix).routes())}


def node_grants(prefix: str, node: str) -> set[Grant]:
    keys = Keys(prefix)
    rw = rpc.Permission.READWRITE
    return {
        Grant(rw, keys.node(node)),
        Grant.prefix(rw, keys.statuses()),
        Grant.prefix(rw, keys.route_dynos()),
        # Where dynos may connect for their add-ons (the agent's firewall).
        Grant.prefix(rpc.Permission.READ, keys.addon_grants()),
    }


def node_user(node: str) -> str:
    return pki.common_name(pki.Role.NODE, pki.check_name(node))


async def seal(etcd: Etcd, prefix: str, *, say: Say = _quiet) -> None:
    """Create the users and roles (see the module) and turn authentication on.

    Run it with a ``root`` bundle's connection: first while authentication is
    still off, and again whenever wanted (it only repairs what differs).
    """
    await _ensure_role(etcd, ROOT_ROLE, None, prefix, say)
    await _ensure_role(etcd, ROUTER_ROLE, router_grants(prefix), prefix, say)
    for user, role in (
        (pki.common_name(pki.Role.ROOT), ROOT_ROLE),
        (pki.common_name(pki.Role.CONTROLLER), ROOT_ROLE),
        (pki.common_name(pki.Role.ROUTER), ROUTER_ROLE),
    ):
        await _ensure_user(etcd, user, role, say)
    # Nodes that joined under an older release get what their role lacks now.
    listed = await etcd.auth("RoleList", rpc.AuthRoleListRequest())
    for role in sorted(r for r in listed.roles if r.startswith("node.")):
        await _ensure_role(etcd, role, node_grants(prefix, role.removeprefix("node.")), prefix, say)
    await etcd.auth("AuthEnable", rpc.AuthEnableRequest())
    say("authentication on: clients are known by their certificate's CN")


async def ensure_node(etcd: Etcd, prefix: str, node: str, *, say: Say = _quiet) -> None:
    """User and role ``node.NAME``, allowed what the node's agent writes."""
    user = node_user(node)
    await _ensure_role(etcd, user, node_grants(prefix, node), prefix, say)
    await _ensure_user(etcd, user, user, say)


async def remove_node(etcd: Etcd, node: str, *, say: Say = _quiet) -> None:
    """Take the node's user and role away: its certificate opens nothing any more."""
    user = node_user(node)
    for method, request in (
        ("UserDelete", rpc.AuthUserDeleteRequest(name=user)),
        ("RoleDelete", rpc.AuthRoleDeleteRequest(role=user)),
    ):
        try:
            await etcd.auth(method, request)
            say(f"{method.removesuffix('Delete').lower()} {user} deleted")
        except errors.NotFound:
            pass


async def _ensure_role(
    etcd: Etcd, role: str, grants: set[Grant] | None, prefix: str, say: Say
) -> None:
    """Make the role's permissions under ``{prefix}/`` exactly ``grants`` (those
    under other prefixes, another Slipway's in the same etcd, stay as they are).
    ``grants`` None: the role is etcd's own ``root`` and holds no key permissions."""
    try:
        await etcd.auth("RoleAdd", rpc.AuthRoleAddRequest(name=role))
        say(f"role {role} added")
    except errors.AlreadyExists:
        pass
    if grants is None:
        return
    got = await etcd.auth("RoleGet", rpc.AuthRoleGetRequest(role=role))
    have = {Grant(p.permType, p.key, p.range_end) for p in got.perm}
    # etcd keeps one permission per range: a grant replaces the kind held on
    # its range, a revoke takes the range whatever its kind.
    scope = Keys(prefix).prefix.encode() + b"/"
    wanted_ranges = {(g.key, g.range_end) for g in grants}
    stray = [
        g for g in have if g.key.startswith(scope) and (g.key, g.range_end) not in wanted_ranges
    ]
    for grant in sorted(stray):
        await etcd.auth(
            "RoleRevokePermission",
            rpc.AuthRoleRevokePermissionRequest(
                role=role, key=grant.key, range_end=grant.range_end
            ),
        )
        say(f"role {role}: revoked {grant.describe()}")
    for grant in sorted(grants - have):
        perm = rpc.Permission(permType=grant.kind, key=grant.key, range_end=grant.range_end)  # type: ignore[arg-type]
        await etcd.auth(
            "RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)
        )
        say(f"role {role}: granted {grant.describe()}")


async def _ensure_user(etcd: Etcd, user: str, role: str, say: Say) -> None:
    try:
        await etcd.auth(
            "UserAdd",
            rpc.AuthUserAddRequest(name=user, options=rpc.UserAddOptions(no_password=True)),
        )
        say(f"user {user} added (no password: its certificate is its proof)")
    except errors.AlreadyExists:
        pass
    got = await etcd.auth("UserGet", rpc.AuthUserGetRequest(name=user))
    roles: Iterable[str] = got.roles
    for extra in sorted(set(roles) - {role}):
        await etcd.auth("UserRevokeRole", rpc.AuthUserRevokeRoleRequest(name=user, role=extra))
        say(f"user {user}: role {extra} revoked")
    if role not in roles:
        await etcd.auth("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role))
        say(f"user {user}: role {role} granted")
