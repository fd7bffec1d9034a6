"""Blobs (slugs, sources, build caches) in the JetStream object store.

Buckets:
    slugs    name = slug sha256 hex digest (immutable; shared by every release using it)
    sources  name = build id (uploaded source tarball)
    caches   name = app name (build cache tarball)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from slipway import errors, streams, tls
from slipway import log as slog
from slipway.pki import Bundle, Role

# JetStream's "insufficient resources": its storage (a disk, or its configured
# cap) is full. Writes fail at once, never hang.
STORAGE_FULL_CODES = frozenset({10023, 10047})

SLUGS = "slugs"
SOURCES = "sources"
CACHES = "caches"
BUCKETS = (SLUGS, SOURCES, CACHES)
# The built-in postgresql's backups (pg:backups), written by the add-ons hosts.
# Apart from BUCKETS: the builders and nodes have no business with it.
ADDON_BACKUPS = "addonbackups"
CHUNK_SIZE = 128 * 1024
# How long a put or get keeps trying while JetStream has no answer: after a
# server dies, the streams it led elect new leaders (seconds, longer on a
# loaded host). Both are idempotent (a put of the same name replaces it).
RETRY_FOR = 30.0

log = slog.get("slipway.objstore")
T = TypeVar("T")


async def retrying(
    op: Callable[[], Awaitable[T]],
    what: str,
    *,
    retry_for: float = RETRY_FOR,
    first_delay: float = 0.5,
) -> T:
    """``op()``, again after a pause while NATS times out, for up to ``retry_for`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    delay = first_delay
    while True:
        try:
            return await op()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            if loop.time() + delay >= deadline:
                raise
            log.warning(
                "object store not answering, retrying", op=what, error=str(exc) or "timeout"
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def storage_full(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in STORAGE_FULL_CODES


def full_error(bucket: str, exc: BaseException) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        f"the object store's storage is full (NATS JetStream refused to store into "
        f"{bucket}: {getattr(exc, 'description', exc)}); free disk space on the NATS "
        "servers or raise their JetStream max_file_store, then try again",
        reason="storage_full",
    )


def inbox_prefix(role: Role) -> str:
    """Where a role's replies arrive: only that role may subscribe there
    (:mod:`slipway.natsauth`)."""
    return f"_INBOX.{role.value}"


def tls_options(credentials: Bundle | None) -> dict[str, object]:
    """nats-py options for ``credentials``: TLS with the bundle's certificate (whose
    email SAN is our NATS user) and the role's own reply prefix; none: plaintext."""
    if credentials is None:
        return {}
    return {
        "tls": tls.client_context(credentials),
        "inbox_prefix": inbox_prefix(credentials.identity().role),
    }


async def connect(
    servers: Sequence[str],
    *,
    name: str = "slipway",
    credentials: Bundle | None = None,
    **options: object,
) -> NATS:
    """Connect to a NATS cluster; reconnects forever once connected. With
    ``credentials``: over TLS (``servers`` may say ``nats://``; nats-py upgrades)."""
    try:
        return await nats.connect(
            servers=list(servers),
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            **tls_options(credentials),
            **options,  # type: ignore[arg-type]
        )
    except Exception as exc:  # nats-py raises a mix of its own and OS errors
        raise errors.Unavailable(f"cannot reach NATS at {','.join(servers)}: {exc}") from exc


class ObjectStores:
    """The three buckets; a bucket is made on first use with ``replicas`` copies.

    ``create=False`` (a party that may not create streams, see
    :mod:`slipway.natsauth`): a missing bucket is :class:`errors.Unavailable`, and
    replicas are left as they are."""

    def __init__(self, js: JetStreamContext, *, replicas: int = 1, create: bool = True) -> None:
        self._js = js
        self._replicas = replicas
        self._create = create
        self._stores: dict[str, object] = {}

    async def _store(self, bucket: str):  # type: ignore[no-untyped-def]
        store = self._stores.get(bucket)
        if store is None:
            try:
                store = await self._js.object_store(bucket)
                # Made earlier, maybe with fewer copies (by an agent, or before
                # the cluster grew): raise it to ours, or warn.
                if self._create:
                    await streams.ensure_replicas(self._js, f"OBJ_{bucket}", self._replicas)
            except nats.js.errors.BucketNotFoundError as exc:
                if not self._create:
                    raise streams.missing(f"OBJ_{bucket}") from exc
                config = nats.js.api.ObjectStoreConfig(
                    bucket=bucket, replicas=self._replicas, storage=nats.js.api.StorageType.FILE
                )
                store = await streams.placed(
                    lambda: self._js.create_object_store(bucket, config=config),
                    f"OBJ_{bucket}",
                    self._replicas,
                )
            self._stores[bucket] = store
        return store

    async def ensure_buckets(self) -> None:
        for bucket in BUCKETS:
            await self._store(bucket)

    async def ensure(self, bucket: str) -> None:
        """Make (or, with ``create=False``, find) one bucket."""
        await self._store(bucket)

    async def put_file(self, bucket: str, name: str, path: Path) -> int:
        return await retrying(lambda: self._put_file(bucket, name, path), f"put {bucket}/{name}")

    async def _put_file(self, bucket: str, name: str, path: Path) -> int:
        store = await self._store(bucket)
        with open(path, "rb") as fh:
            meta = nats.js.api.ObjectMeta(
                name=name, options=nats.js.api.ObjectMetaOptions(max_chunk_size=CHUNK_SIZE)
            )
            try:
                info = await store.put(name, fh, meta=meta)
            except nats.js.errors.APIError as exc:
                # nats-py purges the chunks of a failed put: nothing half-written stays.
                if storage_full(exc):
                    raise full_error(bucket, exc) from exc
                raise
        return int(info.size or 0)

    async def get_file(self, bucket: str, name: str, path: Path) -> None:
        await retrying(lambda: self._get_file(bucket, name, path), f"get {bucket}/{name}")

    async def _get_file(self, bucket: str, name: str, path: Path) -> None:
        store = await self._store(bucket)
        tmp = path.with_name(path.name + ".part")
        try:
            with open(tmp, "wb") as fh:
                await store.get(name, writeinto=fh)
        except nats.js.errors.ObjectNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            raise errors.NotFound(f"{bucket}/{name} is not in the object store") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)

    async def exists(self, bucket: str, name: str) -> bool:
        store = await self._store(bucket)
        try:
            info = await store.get_info(name)
        except nats.js.errors.ObjectNotFoundError:
            return False
        return not info.deleted

    async def digest(self, bucket: str, name: str) -> str:
        """The object's digest as the store records it ("SHA-256=..."): a
        local copy with the same digest has the same bytes."""
        store = await self._store(bucket)
        try:
            info = await store.get_info(name)
        except nats.js.errors.ObjectNotFoundError as exc:
            raise errors.NotFound(f"{bucket}/{name} is not in the object store") from exc
        if info.deleted:
            raise errors.NotFound(f"{bucket}/{name} is not in the object store")
        return str(info.digest or "")

    async def delete(self, bucket: str, name: str) -> bool:
        store = await self._store(bucket)
        try:
            await store.delete(name)
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
            return False
        except nats.js.errors.APIError as exc:
            # A delete writes a marker, which a full store refuses too.
            if storage_full(exc):
                raise full_error(bucket, exc) from exc
            raise
        return True

    async def infos(self, bucket: str, *, timeout: float = 10.0) -> list[nats.js.api.ObjectInfo]:
        """Every live object's info. Bounded: nats-py's listing waits on a watcher
        with no deadline of its own, and must not stall a caller's loop."""
        store = await self._store(bucket)
        try:
            infos = await asyncio.wait_for(store.list(), timeout)
        except nats.js.errors.NotFoundError:
            return []  # an empty bucket answers "not found"
        except TimeoutError as exc:
            raise errors.Unavailable(f"listing {bucket} took over {timeout:.0f}s") from exc
        return [i for i in infos if not i.deleted and i.name]

    async def names(self, bucket: str) -> list[str]:
        return [i.name for i in await self.infos(bucket)]
