"""A thin typed layer over aetcd: endpoint lists, error translation, and
optimistic read-modify-write transactions guarded by revision.

Every write of desired state goes through :meth:`Etcd.update`: read the keys,
compute the new values with a pure function, and commit only if none of the
keys changed since they were read (compare on ``mod_revision``). A lost race is
retried from a fresh read; after too many it is a :class:`Conflict`, so no
update is ever silently overwritten.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc

from slipway import errors, pki, tls


@dataclass(frozen=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    key: bytes
    value: bytes
    mod_revision: int


# A mutation receives the current values (None when absent) and returns the
# writes: key -> new bytes, or None to delete. Raising aborts with no write.
Mutation = Callable[[dict[bytes, bytes | None]], Mapping[bytes, bytes | None]]


class _Client(aetcd.Client):
    """aetcd's client, given a gRPC target that may list several members, over
    TLS when given channel credentials (aetcd itself only dials plaintext)."""

    def __init__(
        self,
        target: str,
        timeout: float,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
    ) -> None:
        super().__init__(host="unused", port=0, timeout=timeout)  # type: ignore[arg-type]
        self._target = target
        self._credentials = credentials
        self._server_name = server_name

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        options = {
            "grpc.lb_policy_name": "round_robin",
            "grpc.keepalive_time_ms": 10_000,
            "grpc.keepalive_timeout_ms": 5_000,
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.initial_reconnect_backoff_ms": 200,
            "grpc.max_reconnect_backoff_ms": 2_000,
        }
        if self._credentials is None:
            self.channel = rpc.insecure_channel(self._target, options=list(options.items()))
        else:
            if self._server_name:
                options["grpc.ssl_target_name_override"] = self._server_name
            self.channel = rpc.secure_channel(
                self._target, self._credentials, options=list(options.items())
            )
        self.auth_stub = rpc.AuthStub(self.channel)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.client.watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


def grpc_target(endpoints: Sequence[str]) -> str:
    """``["10.0.0.1:2379", "http://10.0.0.2:2379"]`` -> a gRPC multi-address target."""
    hosts = []
    for ep in endpoints:
        ep = ep.strip()
        for scheme in ("http://", "https://"):
            if ep.startswith(scheme):
                ep = ep[len(scheme) :]
        if ep:
            hosts.append(ep)
    if not hosts:
        raise errors.InvalidArgument("no etcd endpoints given")
    if len(hosts) == 1:
        return hosts[0]
    return "ipv4:" + ",".join(hosts)


# The name every member's certificate carries besides its address, for clients
# of several members (see server_name).
CLUSTER_NAME = "etcd.slipway"


def server_name(endpoints: Sequence[str]) -> str | None:
    """The name TLS checks the members' certificates against, when not the host
    dialled: a target of several addresses (``ipv4:a,b``) names no single host,
    and gRPC checks every member against one name, so each member's certificate
    must name :data:`CLUSTER_NAME` too (:func:`slipway.engines.etcd` checks).
    None for one endpoint: its certificate must name its host, as usual."""
    return CLUSTER_NAME if grpc_target(endpoints).startswith("ipv4:") else None


# How long a read keeps trying through a member's death or a leader election
# (etcd's election timeout is 1 s by default).
READ_RETRY_SECONDS = 5.0
# How long a request refused for an auth store changed mid-flight is tried again:
# while nodes join one after another, the store changes every few milliseconds.
AUTH_RETRY_SECONDS = 10.0


def _unavailable(exc: BaseException) -> bool:
    """gRPC UNAVAILABLE, as aetcd raises it or as it comes from grpc directly."""
    if isinstance(exc, aetcd.exceptions.ConnectionFailedError):
        return True
    code = getattr(exc, "code", None)
    return callable(code) and code() == grpc.StatusCode.UNAVAILABLE


def _status(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """The gRPC status behind ``exc``: aetcd wraps it as the cause of its own errors."""
    for err in (exc, exc.__cause__):
        code = getattr(err, "code", None)
        details = getattr(err, "details", None)
        if callable(code) and callable(details):
            return code(), str(details() or "")
    return None, str(exc)


# A TLS handshake that failed on a certificate: etcd's not of our CA or not
# naming the host dialled, or ours refused by etcd (with TLS 1.3 its alert comes
# after the handshake, as "Unwrap failed"). Repeating it cannot help.
_HANDSHAKE = (
    "handshake failed",
    "certificate_verify_failed",
    "hostname verification",
    "unwrap failed",
)


def _refused_tls(exc: BaseException) -> bool:
    code, details = _status(exc)
    return code is grpc.StatusCode.UNAVAILABLE and any(m in details.lower() for m in _HANDSHAKE)


def _old_auth_revision(exc: BaseException) -> bool:
    # etcd sends it as INVALID_ARGUMENT (rpctypes.ErrGRPCAuthOldRevision).
    code, details = _status(exc)
    refused = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    return code in refused and "revision of auth store is old" in details


def _read_may_retry(exc: BaseException) -> bool:
    return (_unavailable(exc) and not _refused_tls(exc)) or _old_auth_revision(exc)


def _translate(exc: BaseException, *, tls: bool = True) -> errors.SlipwayError:
    if isinstance(exc, aetcd.exceptions.RevisionCompactedError):
        return errors.Conflict(f"etcd revision compacted: {exc}", reason="compacted")
    code, details = _status(exc)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return errors.PermissionDenied(
            f"etcd denied the request ({details}): the etcd user of this certificate "
            "(its CN) lacks the permission; see `slipway-controller etcd seal`",
            reason="etcd_permission_denied",
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return errors.Unauthenticated(
            f"etcd did not accept our credentials: {details}", reason="etcd_unauthenticated"
        )
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
        if "already exists" in details:
            return errors.AlreadyExists(f"etcd: {details}", reason="etcd_exists")
        if "not found" in details:
            return errors.NotFound(f"etcd: {details}", reason="etcd_not_found")
        return errors.FailedPrecondition(f"etcd refused the request: {details}")
    if _refused_tls(exc):
        return errors.Unauthenticated(
            f"TLS with etcd failed ({details}): etcd and this process need "
            "certificates of the same cluster CA, and etcd's must name the host dialled",
            reason="etcd_tls",
        )
    if not tls and "socket closed" in details.lower():
        return errors.Unavailable(
            f"etcd is unavailable: {details} (if etcd speaks TLS, give --credentials DIR)",
            reason="etcd_unavailable",
        )
    return errors.Unavailable(f"etcd is unavailable: {exc}", reason="etcd_unavailable")


class Etcd:
    """A connection to an etcd cluster."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        credentials: pki.Bundle | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.endpoints = list(endpoints)
        self.credentials = credentials
        self.timeout = timeout
        channel_credentials = None
        if credentials is not None:
            channel_credentials = tls.grpc_channel_credentials(credentials)
        elif any(ep.strip().startswith("https://") for ep in endpoints):
            raise errors.FailedPrecondition(
                f"etcd at {', '.join(endpoints)} speaks TLS: give --credentials DIR",
                reason="no_credentials",
            )
        self._client = _Client(
            grpc_target(endpoints),
            timeout=timeout,
            credentials=channel_credentials,
            server_name=server_name(endpoints) if credentials else None,
        )
        self.tx = self._client.transactions
        # Reads repeated because etcd was briefly unavailable (see _read).
        self.read_retries = 0

    @property
    def raw(self) -> aetcd.Client:
        return self._client

    async def connect(self) -> None:
        await self._client.connect()

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> Etcd:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _translate(self, exc: BaseException) -> errors.SlipwayError:
        return _translate(exc, tls=self.credentials is not None)

    async def _retrying(
        self,
        call: Callable[[], Awaitable[Any]],
        *,
        retry_if: Callable[[BaseException], bool],
        seconds: float,
        on_retry: Callable[[], None] = lambda: None,
    ) -> Any:
        """Run ``call``, repeating it with backoff for up to ``seconds`` while its
        failure is one ``retry_if`` accepts; any other failure is translated."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        delay = 0.05
        while True:
            try:
                return await call()
            except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError, grpc.RpcError) as exc:
                if not retry_if(exc) or loop.time() + delay > deadline:
                    raise self._translate(exc) from exc
            on_retry()
            # Jittered, so writers refused together do not all come back together.
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 0.5)

    async def _call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one request; repeat it (briefly) when etcd refused it because the
        auth store changed while it was in flight ("revision of auth store is
        old", after a node joined, say): etcd applied nothing then, so a second
        try is safe for writes too, and etcd's own client does the same."""
        return await self._retrying(call, retry_if=_old_auth_revision, seconds=AUTH_RETRY_SECONDS)

    async def _read(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a read, repeating it while etcd is briefly unavailable.

        When a member dies, calls already routed to its connection fail, and
        while the others elect a leader they answer "etcdserver: leader
        changed"; both are gRPC UNAVAILABLE and pass within about an election
        timeout. A read changes nothing, so repeating it is safe (etcd's own
        client does the same); writes are not repeated here, since after an
        ambiguous failure only the caller knows whether a second try is right.
        """
        return await self._retrying(
            call,
            retry_if=_read_may_retry,
            seconds=READ_RETRY_SECONDS,
            on_retry=self._count_read_retry,
        )

    def _count_read_retry(self) -> None:
        self.read_retries += 1

    async def auth(self, method: str, request: Any) -> Any:
        """One call of etcd's Auth API (``"UserAdd"``, ``"AuthEnable"``...: see
        :mod:`slipway.etcdauth`) on this connection."""
        await self.connect()
        call = getattr(self._client.auth_stub, method)
        return await self._call(lambda: call(request, timeout=self.timeout))

    async def get(self, key: bytes) -> KV | None:
        got = await self._read(lambda: self._client.get(key))
        if got is None:
            return None
        return KV(key, got.value, got.mod_revision, got.create_revision, got.lease)

    async def get_prefix(self, prefix: bytes) -> tuple[list[KV], int]:
        """All keys under ``prefix`` and the store revision they were read at."""
        got = await self._read(lambda: self._client.get_prefix(prefix))
        kvs = [KV(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease) for kv in got]
        return kvs, int(got.header.revision)

    async def revision(self) -> int:
        """The store's current revision (a read of a key that never exists)."""
        _, revision = await self.get_prefix(b"\x00slipway-revision-probe")
        return revision

    async def put(self, key: bytes, value: bytes, *, lease: int | None = None) -> None:
        await self._call(lambda: self._client.put(key, value, lease=lease))

    async def delete(self, key: bytes) -> bool:
        deleted = await self._call(lambda: self._client.delete(key))
        return bool(deleted and deleted.deleted)

    async def delete_prefix(self, prefix: bytes) -> int:
        deleted = await self._call(lambda: self._client.delete_prefix(prefix))
        return int(deleted.deleted) if deleted else 0

    async def create(self, key: bytes, value: bytes, *, lease: int | None = None) -> bool:
        """Put ``key`` only if it does not exist; True when this call created it."""
        ok, _ = await self._call(
            lambda: self._client.transaction(
                compare=[self.tx.version(key) == 0],
                success=[self.tx.put(key, value, lease=lease)],
                failure=[],
            )
        )
        return bool(ok)

    async def txn(
        self, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()
    ) -> bool:
        """One transaction: ``success`` when every ``compare`` holds, else ``failure``.

        Comparisons and operations come from :attr:`tx` (``tx.mod(key) == rev``,
        ``tx.value(key) == b"..."``, ``tx.put(key, value)``, ``tx.delete(key)``).
        Returns whether the comparisons held. Not repeated after an error: only the
        caller knows whether a second try is right.
        """
        ok, _ = await self._call(
            lambda: self._client.transaction(
                compare=list(compare), success=list(success), failure=list(failure)
            )
        )
        return bool(ok)

    async def update(
        self,
        keys: Sequence[bytes],
        mutate: Mutation,
        *,
        attempts: int = 200,
    ) -> dict[bytes, bytes | None]:
        """Read ``keys``, apply ``mutate``, commit guarded by revision; retry lost races.

        Returns the writes that were committed.
        """
        for attempt in range(attempts):
            current: dict[bytes, bytes | None] = {}
            revisions: dict[bytes, int] = {}
            for key in keys:
                kv = await self.get(key)
                current[key] = kv.value if kv else None
                revisions[key] = kv.mod_revision if kv else 0
            writes = mutate(dict(current))
            compares = [self.tx.mod(k) == rev for k, rev in revisions.items()]
            ops = [
                self.tx.put(k, v) if v is not None else self.tx.delete(k) for k, v in writes.items()
            ]
            ok, _ = await self._call(
                functools.partial(
                    self._client.transaction, compare=compares, success=ops, failure=[]
                )
            )
            if ok:
                return dict(writes)
            # Lost a race: back off a little (more under heavy contention), re-read.
            await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
        raise errors.Conflict(
            "too many concurrent changes to the same app; try again", reason="write_conflict"
        )

    async def create_all(self, pairs: Sequence[tuple[bytes, bytes]], *, batch: int = 100) -> None:
        """Create every key, ``batch`` to a transaction; none may exist yet.

        etcd caps the operations of one transaction (128 by default), so a large
        set takes several; each is all-or-nothing and a key found existing stops
        the whole call with nothing of that batch written.
        """
        for start in range(0, len(pairs), batch):
            chunk = pairs[start : start + batch]
            ok, _ = await self._call(
                functools.partial(
                    self._client.transaction,
                    compare=[self.tx.version(k) == 0 for k, _ in chunk],
                    success=[self.tx.put(k, v) for k, v in chunk],
                    failure=[],
                )
            )
            if not ok:
                raise errors.Conflict(
                    f"a key to create exists already (batch from {chunk[0][0].decode()!r})"
                )

    async def snapshot(self, out: BinaryIO) -> None:
        """etcd's snapshot of its whole database, written to ``out``."""
        await self._call(lambda: self._client.snapshot(out))

    async def lease(self, ttl: int) -> aetcd.leases.Lease:
        return await self._call(lambda: self._client.lease(ttl))

    async def refresh_lease(self, lease_id: int) -> int:
        """Keeps a lease alive; returns its remaining TTL (0 when it has expired)."""
        reply = await self._call(lambda: self._client.refresh_lease(lease_id))
        return int(reply.TTL) if reply is not None else 0

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(lambda: self._client.revoke_lease(lease_id))

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Events under ``prefix`` from ``start_revision`` (inclusive) on.

        Raises :class:`errors.Unavailable` when the stream breaks; the caller
        re-lists and watches again from the new revision.
        """
        try:
            watch = await self._client.watch_prefix(prefix, start_revision=start_revision)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise self._translate(exc) from exc
        try:
            async for event in watch:
                kind = "delete" if event.kind == aetcd.rtypes.EventKind.DELETE else "put"
                yield WatchEvent(kind, event.kv.key, event.kv.value, event.kv.mod_revision)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise self._translate(exc) from exc
        finally:
            try:
                await asyncio.wait_for(watch.cancel(), 1.0)
            except Exception:
                pass
