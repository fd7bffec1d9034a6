"""API tokens: created by operators, stored only as sha256 digests in etcd.

Clients send ``authorization: Bearer <token>`` metadata. A verified token is
cached briefly so a busy client does not cost an etcd read per call; a revoked
token stops working within ``cache_seconds``.
"""

from __future__ import annotations

import hashlib
import secrets

import grpc

from controller.core.models import TokenRecord
from slipway import errors
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys

TOKEN_PREFIX = "slw_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Tokens:
    def __init__(
        self, etcd: Etcd, keys: Keys, *, cache_seconds: float = 5.0, clock: Clock = SystemClock()
    ) -> None:
        self.clock = clock
        self.etcd = etcd
        self.keys = keys
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[str, float]] = {}

    async def create(self, name: str) -> str:
        if not name or len(name) > 64:
            raise errors.InvalidArgument("a token needs a name of 1 to 64 characters")
        token = new_token()
        record = TokenRecord(name=name, created_at=self.clock.now())
        await self.etcd.put(self.keys.token(digest(token)), record.encode())
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

    async def verify(self, token: str) -> str:
        """The token's name; raises Unauthenticated when it is unknown."""
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
        name = TokenRecord.decode(kv.value).name
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (name, now + self.cache_seconds)
        return name

    async def authenticate(self, context: grpc.aio.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata() or ())
        header = str(metadata.get("authorization", ""))
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated(
                "missing API token; run `slipway login` or set SLIPWAY_TOKEN",
                reason="missing_token",
            )
        return await self.verify(token.strip())
