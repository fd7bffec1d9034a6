"""API tokens and who may call what: the one place permissions are decided.

Tokens are created by operators (``slipway-controller tokens create``), by
people (``slipway login``, ``slipway authorizations:create``) or, for nodes,
by a join (``slipway-agent join``), and stored only as sha256 digests in etcd.
Clients send ``authorization: Bearer <token>`` metadata.

Three kinds of caller, two scopes (:func:`authorize` decides between them):

    token        record             Scope.API (PlatformService,    Scope.NODE (NodeService)
                                    builds, logs, runs)
    operator     {name}             yes, as an admin               only with legacy_node_api_tokens
    person       {name, user: E}    what E may (see :class:`Access`)  no
    node         {name, node: N}    no (PermissionDenied)          for node N only

Within Scope.API, :class:`Access` admits each call by the rule of its method
(controller/core/access.py): the account's permissions on the request's app,
admin-only calls, and the token's own scope (global, write, read).

``legacy_node_api_tokens`` is how a controller without credentials (plaintext,
``--insecure``) behaves as before node tokens existed: agents may present an
operator's token and act as any node. A controller with credentials never
allows it, so the admin token need not (and must not) be given to agents.

A verified token is cached briefly so a busy client does not cost an etcd read
per call; a token revoked through another controller stops working within
``cache_seconds`` (at once on the controller that revoked it), and an expired
one at its expiry.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import grpc

from controller.core import access, validation
from controller.core.access import Identity, TokenScope
from controller.core.models import TokenRecord
from controller.core.throttle import LoginThrottle
from controller.store.accounts import Accounts
from slipway import errors
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys

TOKEN_PREFIX = "slw_"


class Scope(StrEnum):
    API = "api"  # PlatformService and the build, log and run calls on it
    NODE = "node"  # NodeService: an agent, for its own node


@dataclass(frozen=True)
class Caller:
    """Who a verified token belongs to."""

    name: str
    node: str = ""  # a node's token: the node it speaks for
    user: str = ""  # a person's token: their email ("" and no node: an operator's)
    scope: TokenScope = TokenScope.GLOBAL


@dataclass(frozen=True)
class Policy:
    legacy_node_api_tokens: bool = False


def authorize(caller: Caller, scope: Scope, *, node: str = "", policy: Policy = Policy()) -> None:
    """Raise PermissionDenied unless ``caller`` may call ``scope`` (as ``node``, for NODE)."""
    if scope is Scope.API:
        if caller.node:
            raise errors.PermissionDenied(
                f"this is node {caller.node!r}'s token: a node token opens NodeService only; "
                "use an API token from `slipway-controller tokens create`",
                reason="node_token",
            )
        return
    if not caller.node:
        if policy.legacy_node_api_tokens and not caller.user:  # an operator's, never a person's
            return
        raise errors.PermissionDenied(
            "NodeService takes a node token only: join the node with "
            "`slipway-agent join` (or give it one from "
            "`slipway-controller tokens create --node NAME`), never an API token",
            reason="not_node_token",
        )
    if node != caller.node:
        raise errors.PermissionDenied(
            f"this token belongs to node {caller.node!r}; it cannot act as node {node!r}",
            reason="wrong_node",
        )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def bearer(context: grpc.aio.ServicerContext) -> str:
    """The request's bearer token ("" when none)."""
    metadata = dict(context.invocation_metadata() or ())
    scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def node_token_name(node: str) -> str:
    return f"node.{node}"


class Tokens:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        *,
        cache_seconds: float = 5.0,
        clock: Clock = SystemClock(),
        policy: Policy = Policy(),
    ) -> None:
        self.clock = clock
        self.etcd = etcd
        self.keys = keys
        self.cache_seconds = cache_seconds
        self.policy = policy
        self._cache: dict[str, tuple[Caller, float]] = {}

    async def create(
        self,
        name: str,
        *,
        node: str = "",
        user: str = "",
        scope: TokenScope = TokenScope.GLOBAL,
        expires_in: float = 0.0,
        description: str = "",
    ) -> tuple[str, TokenRecord]:
        """A new token and its record; ``expires_in`` seconds (0: never)."""
        if not name or len(name) > 64:
            raise errors.InvalidArgument("a token needs a name of 1 to 64 characters")
        if len(description) > 200:
            raise errors.InvalidArgument("a token's description has at most 200 characters")
        if expires_in < 0:
            raise errors.InvalidArgument("a token's lifetime cannot be negative")
        token = new_token()
        now = self.clock.now()
        record = TokenRecord(
            id=secrets.token_hex(6),
            name=name,
            created_at=now,
            node=node,
            user=user,
            scope=scope.value,
            expires_at=now + expires_in if expires_in else 0.0,
            description=description,
        )
        await self.etcd.put(self.keys.token(digest(token)), record.encode())
        return token, record

    async def create_node_token(self, node: str) -> str:
        """A new token for ``node``; the node's earlier tokens stop working."""
        token, _ = await self.create(node_token_name(node), node=node)
        for token_digest, record in await self.list():
            if record.node == node and token_digest != digest(token):
                await self.etcd.delete(self.keys.token(token_digest))
        self._cache.clear()
        return token

    async def list(self) -> list[tuple[str, TokenRecord]]:
        kvs, _ = await self.etcd.get_prefix(self.keys.tokens())
        prefix_len = len(self.keys.tokens())
        return [(kv.key[prefix_len:].decode(), TokenRecord.decode(kv.value)) for kv in kvs]

    async def of_user(self, user: str) -> Sequence[TokenRecord]:
        """The account's tokens (logins and authorizations), oldest first."""
        found = [r for _, r in await self.list() if r.user == user and not r.node]
        return sorted(found, key=lambda r: r.created_at)

    async def revoke_of_user(self, user: str, token_id: str) -> None:
        for token_digest, record in await self.list():
            if record.user == user and token_id and record.id == token_id:
                await self.etcd.delete(self.keys.token(token_digest))
                self._cache.clear()
                return
        raise errors.NotFound(
            f"{user} has no token {token_id!r}; see `slipway authorizations`",
            reason="token_not_found",
        )

    async def revoke(self, name: str) -> int:
        revoked = 0
        for token_digest, record in await self.list():
            if record.name == name:
                revoked += int(await self.etcd.delete(self.keys.token(token_digest)))
        self._cache.clear()
        return revoked

    def forget(self) -> None:
        """Drop every cached verification (after tokens were deleted behind our back)."""
        self._cache.clear()

    async def verify(self, token: str) -> Caller:
        """Who the token belongs to; raises Unauthenticated when it is unknown."""
        key = digest(token)
        now = self.clock.monotonic()
        cached = self._cache.get(key)
        if cached and cached[1] > now:
            return cached[0]
        kv = await self.etcd.get(self.keys.token(key))
        if kv is None:
            raise errors.Unauthenticated(
                "invalid API token; run `slipway login` with a token from "
                "`slipway-controller tokens create`",
                reason="bad_token",
            )
        record = TokenRecord.decode(kv.value)
        if record.expires_at and record.expires_at <= self.clock.now():
            raise errors.Unauthenticated(
                f"token {record.name!r} expired; log in again (`slipway login`)",
                reason="expired_token",
            )
        caller = Caller(record.name, record.node, record.user, TokenScope(record.scope))
        if len(self._cache) > 10_000:
            self._cache.clear()
        lifetime = self.cache_seconds
        if record.expires_at:
            lifetime = min(lifetime, record.expires_at - self.clock.now())
        self._cache[key] = (caller, now + lifetime)
        return caller

    async def identify(self, context: grpc.aio.ServicerContext) -> Caller:
        token = bearer(context)
        if not token:
            raise errors.Unauthenticated(
                "missing API token; run `slipway login` or set SLIPWAY_TOKEN",
                reason="missing_token",
            )
        return await self.verify(token)

    def authorize_node(self, caller: Caller, node: str) -> None:
        authorize(caller, Scope.NODE, node=node, policy=self.policy)


def peer_address(context: grpc.aio.ServicerContext) -> str:
    """The caller's IP address ("ipv4:10.0.0.5:51234" -> "10.0.0.5")."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return rest.rpartition(":")[0] if kind == "ipv4" else peer


class Access:
    """Admission of every PlatformService call: who is calling (their token) and
    whether the rule of the method (controller/core/access.py) lets them, on the
    request's app. The API wrappers call :meth:`admit` before any work."""

    def __init__(self, tokens: Tokens, accounts: Accounts, clock: Clock) -> None:
        self.tokens = tokens
        self.accounts = accounts
        self.clock = clock
        self._accounts_seen: dict[str, tuple[bool, float]] = {}
        # Guessing at one account slows down after 5 misses; one address (which
        # may be a whole office behind NAT) after 20, across all accounts.
        self.per_account = LoginThrottle(clock, free=5)
        self.per_address = LoginThrottle(clock, free=20)

    async def identity(self, caller: Caller) -> Identity:
        if not caller.user:
            return Identity(user="", token_name=caller.name, admin=True, scope=caller.scope)
        admin = await self._is_admin(caller.user)
        return Identity(caller.user, caller.name, admin, caller.scope)

    async def _is_admin(self, email: str) -> bool:
        """Whether the account is a platform admin, cached as long as tokens are (a
        removed account stops working within the same bound)."""
        now = self.clock.monotonic()
        cached = self._accounts_seen.get(email)
        if cached and cached[1] > now:
            return cached[0]
        user = await self.accounts.get_user(email)
        if user is None:
            self._accounts_seen.pop(email, None)
            raise errors.Unauthenticated(
                f"the account {email} of this token was removed", reason="no_account"
            )
        if len(self._accounts_seen) > 10_000:
            self._accounts_seen.clear()
        self._accounts_seen[email] = (user.admin, now + self.tokens.cache_seconds)
        return user.admin

    def forget(self) -> None:
        """Drop every cached token and account (after one was removed here)."""
        self.tokens.forget()
        self._accounts_seen.clear()

    async def admit(
        self, context: grpc.aio.ServicerContext, method: str, app: str, team: str = ""
    ) -> Identity:
        rule = access.rule_of(method)
        if rule.public:
            return Identity(user="", token_name="", admin=False, scope=TokenScope.READ)
        caller = await self.tokens.identify(context)
        authorize(caller, Scope.API, policy=self.tokens.policy)
        who = await self.identity(caller)
        grant = None
        role = None
        if not who.admin:
            if rule.needs is not None:
                if not app:
                    raise errors.InvalidArgument("no app given; pass -a APP", reason="missing_app")
                grant = await self.accounts.grant(app, who.user)
            if rule.team is not None and team:
                role = await self.accounts.teams.role(team, who.user)
        access.decide(who, method, app, grant, team=team, role=role)
        return who

    async def check(self, who: Identity, method: str, app: str) -> None:
        """The method's rule once more, on a second app of the same call (attaching an
        add-on needs manage on the app it belongs to as well)."""
        grant = None if who.admin else await self.accounts.grant(app, who.user)
        access.decide(who, method, app, grant)

    async def login(self, email: str, password: str, source: str) -> tuple[str, Identity]:
        """A new token for the account when the password is right; throttled."""
        address = validation.email(email)
        wait = max(self.per_account.wait(address), self.per_address.wait(source))
        if wait > 0:
            raise errors.ResourceExhausted(
                f"too many failed logins for {address} or from {source}; "
                f"try again in {max(1, round(wait))} s",
                reason="login_throttled",
            )
        user = await self.accounts.check_password(address, password)
        if user is None:
            self.per_account.failed(address)
            self.per_address.failed(source)
            raise errors.Unauthenticated("wrong email or password", reason="bad_login")
        self.per_account.succeeded(address)
        token, record = await self.tokens.create(
            f"login {address}", user=address, description="slipway login"
        )
        return token, Identity(address, record.name, user.admin)
