"""Joining a node: one-time join tokens and JoinService.

    operator: slipway-controller nodes join-token n1 --ttl 1h   -> slj_... (printed once)
              etcd {prefix}/jointokens/{sha256} = {node: n1, ...} under a 1 h lease
    new host: slipway-agent join --token slj_... (key pair made there; CSR sent)
              Join: read the token's record -> sign the CSR as node.n1 (CA key)
                    -> on_node_admitted(n1) -> delete the record, if unchanged
                    (one use) -> n1's node token -> cert + CA cert + node token

The call carries no API token: the join token is the credential. Unknown,
used and expired tokens all answer UNAUTHENTICATED with one message, so a
caller learns nothing about tokens it does not hold. The hook runs before the
token is consumed: when it fails, the same token can be tried again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from cryptography import x509

from controller.api.auth import Tokens, digest, new_token
from controller.core import validation
from controller.core.models import JoinTokenRecord
from slipway import errors, pki
from slipway import log as slog
from slipway.clock import Clock, SystemClock
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.v1 import join_pb2 as jpb
from slipway.v1 import join_pb2_grpc

log = slog.get("controller.join")

JOIN_PREFIX = "slj_"
MIN_TTL = 1
MAX_TTL = 7 * 86400

# Called once a node is admitted, before its token is consumed (the lead's
# etcd user creation); raising refuses the join.
AdmitHook = Callable[[str], Awaitable[None]]


async def admit_nothing(node: str) -> None:
    return None


def _refused() -> errors.Unauthenticated:
    return errors.Unauthenticated(
        "unknown, used or expired join token; create one with "
        "`slipway-controller nodes join-token NAME`",
        reason="bad_join_token",
    )


class JoinTokens:
    """One-time join tokens: only digests in etcd, each under a lease of its TTL."""

    def __init__(self, etcd: Etcd, keys: Keys, *, clock: Clock = SystemClock()) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock

    async def create(self, node: str, ttl_seconds: int) -> tuple[str, JoinTokenRecord]:
        pki.check_name(node)
        if not MIN_TTL <= ttl_seconds <= MAX_TTL:
            raise errors.InvalidArgument(
                f"a join token lives from {MIN_TTL} s to {MAX_TTL // 86400} days"
            )
        token = new_token(JOIN_PREFIX)
        now = self.clock.now()
        record = JoinTokenRecord(node=node, created_at=now, expires_at=now + ttl_seconds)
        lease = await self.etcd.lease(ttl_seconds)
        await self.etcd.put(self.keys.join_token(digest(token)), record.encode(), lease=lease.id)
        return token, record

    async def peek(self, token: str) -> tuple[JoinTokenRecord, int]:
        """The token's record and its revision, unconsumed; Unauthenticated when none."""
        if not token.startswith(JOIN_PREFIX):
            raise _refused()
        kv = await self.etcd.get(self.keys.join_token(digest(token)))
        if kv is None:
            raise _refused()
        record = JoinTokenRecord.decode(kv.value)
        if record.expires_at <= self.clock.now():  # the lease is about to go
            raise _refused()
        return record, kv.mod_revision

    async def consume(self, token: str, revision: int) -> None:
        """Delete the record if it is still the one read: exactly one join wins."""
        key = self.keys.join_token(digest(token))
        tx = self.etcd.tx
        if not await self.etcd.txn(compare=[tx.mod(key) == revision], success=[tx.delete(key)]):
            raise _refused()


class JoinAPI(join_pb2_grpc.JoinServiceServicer):
    def __init__(
        self,
        join_tokens: JoinTokens,
        tokens: Tokens,
        ca: pki.CA | None,
        *,
        on_node_admitted: AdmitHook = admit_nothing,
    ) -> None:
        self.join_tokens = join_tokens
        self.tokens = tokens
        self.ca = ca
        self.on_node_admitted = on_node_admitted

    async def Join(
        self, request: jpb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> jpb.JoinResponse:
        try:
            return await self._join(request)
        except errors.SlipwayError as exc:
            log.info("join refused", code=exc.code.name, error=exc.message)
            await context.abort(exc.code, exc.message, errors.trailers(exc))
            raise AssertionError("unreachable: abort raises") from exc

    async def _join(self, request: jpb.JoinRequest) -> jpb.JoinResponse:
        if self.ca is None:
            raise errors.FailedPrecondition(
                "this controller cannot admit nodes: start it with --ca-dir "
                "(the directory holding the cluster CA's ca.crt and ca.key)",
                reason="no_ca",
            )
        address = validation.host(request.advertise_address) if request.advertise_address else ""
        record, revision = await self.join_tokens.peek(request.token)
        node = record.node
        cert_pem = pki.sign_csr(
            self.ca, request.csr_pem, pki.Role.NODE, name=node, hosts=[address] if address else []
        )
        await self.on_node_admitted(node)
        await self.join_tokens.consume(request.token, revision)
        node_token = await self.tokens.create_node_token(node)
        identity = pki.identity_of(x509.load_pem_x509_certificate(cert_pem))
        log.info("node admitted", node=node, address=address)
        response = jpb.JoinResponse(
            node=node,
            certificate_pem=cert_pem,
            ca_certificate_pem=self.ca.cert_pem,
            node_token=node_token,
        )
        response.certificate_not_after.FromDatetime(identity.not_after)
        return response
