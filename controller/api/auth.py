"""API tokens and who may call what: the one place permissions are decided.

Tokens are created by operators (``slipway-controller tokens create``) or, for
nodes, by a join (``slipway-agent join``), and stored only as sha256 digests in
etcd. Clients send ``authorization: Bearer <token>`` metadata.

Two kinds of caller, two scopes (:func:`authorize` is the whole policy):

    token        record            Scope.API (PlatformService,    Scope.NODE (NodeService)
                                   builds, logs, runs)
    operator     {name}            yes                            only with legacy_node_api_tokens
    node         {name, node: N}   no (PermissionDenied)          for node N only

``legacy_node_api_tokens`` is how a controller without credentials (plaintext,
``--insecure``) behaves as before node tokens existed: agents may present an
operator's token and act as any node. A controller with credentials never
allows it, so the admin token need not (and must not) be given to agents.

A verified token is cached briefly so a busy client does not cost an etcd read
per call; a revoked token stops working within ``cache_seconds``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

import grpc

from controller.core.models import TokenRecord
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
        if policy.legacy_node_api_tokens:
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

    async def create(self, name: str, *, node: str = "") -> str:
        if not name or len(name) > 64:
            raise errors.InvalidArgument("a token needs a name of 1 to 64 characters")
        token = new_token()
        record = TokenRecord(name=name, created_at=self.clock.now(), node=node)
        await self.etcd.put(self.keys.token(digest(token)), record.encode())
        return token

    async def create_node_token(self, node: str) -> str:
        """A new token for ``node``; the node's earlier tokens stop working."""
        token = await self.create(node_token_name(node), node=node)
        for token_digest, record in await self.list():
            if record.node == node and token_digest != digest(token):
                await self.etcd.delete(self.keys.token(token_digest))
        self._cache.clear()
        return token

    async def list(self) -> list[tuple[str, TokenRecord]]:
        kvs, _ = await self.etcd.get_prefix(self.keys.tokens())
        prefix_len = len(self.keys.tokens())
        return [(kv.key[prefix_len:].decode(), TokenRecord.decode(kv.value)) for kv in kvs]

    async def revoke(self, name: str) -> int:
        revoked = 0
        for token_digest, record in await self.list():
            if record.name == name:
                revoked += int(await self.etcd.delete(self.keys.token(token_digest)))
        self._cache.clear()
        return revoked

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
        caller = Caller(record.name, record.node)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (caller, now + self.cache_seconds)
        return caller

    async def identify(self, context: grpc.aio.ServicerContext) -> Caller:
        token = bearer(context)
        if not token:
            raise errors.Unauthenticated(
                "missing API token; run `slipway login` or set SLIPWAY_TOKEN",
                reason="missing_token",
            )
        return await self.verify(token)

    async def authenticate(self, context: grpc.aio.ServicerContext) -> str:
        """The operator's token name, for Scope.API calls; node tokens are refused."""
        caller = await self.identify(context)
        authorize(caller, Scope.API, policy=self.policy)
        return caller.name

    def authorize_node(self, caller: Caller, node: str) -> None:
        authorize(caller, Scope.NODE, node=node, policy=self.policy)
