"""Builds from the API's side: source uploads, buildpack lists, build caches.

Upload path (``UploadSource``): chunks are written to a temporary file with a
hard size limit; the declared size and sha256 are verified; the whole archive
is checked with :func:`slipway.archive.check_archive` (no ``..``, absolute
paths, devices or escaping links) before anything is stored. Only then is the
tarball put in the ``sources`` bucket, the build record created (pending, with
the app's buildpacks and current config) and the job queued for the builders.
A refused upload leaves no object, no record and no job behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from controller.bus.buildbus import BuildBus
from controller.core.models import AppRecord
from controller.store.build_records import FAILED, BuildRecord, BuildStore, new_build_id
from controller.store.state import State
from slipway import archive, buildproto, errors, objstore, stackimage
from slipway import log as slog
from slipway.clock import Clock, SystemClock

log = slog.get("controller.builds")

MAX_CHUNK = 1024 * 1024
MAX_BUILDPACK_SPEC = 1024


@dataclass(frozen=True)
class UploadMeta:
    app: str
    size: int
    sha256: str
    source_version: str = ""


def buildpack_list(current: list[str], action: str, specs: list[str], index: int) -> list[str]:
    """The app's buildpacks after ``set`` / ``add`` / ``remove`` / ``clear`` (pure)."""
    for spec in specs:
        if not spec or len(spec) > MAX_BUILDPACK_SPEC or any(c.isspace() for c in spec):
            raise errors.InvalidArgument(f"{spec!r} is not a buildpack name, path or URL")
    if action == "clear":
        return []
    if action == "remove":
        missing = [s for s in specs if s not in current]
        if missing:
            raise errors.InvalidArgument(f"buildpack {missing[0]} is not set on this app")
        return [b for b in current if b not in specs]
    if not specs:
        raise errors.InvalidArgument("give a buildpack: a built-in name, a path or a URL")
    if index < 0 or index > len(current) + 1:
        raise errors.InvalidArgument(f"index {index} is out of range 1..{len(current) + 1}")
    if action == "set":
        if index == 0:
            new = list(specs)
        else:
            new = list(current)
            new[index - 1 : index] = specs
    elif action == "add":
        dup = [s for s in specs if s in current]
        if dup:
            raise errors.AlreadyExists(f"buildpack {dup[0]} is already set on this app")
        new = list(current)
        at = len(new) if index == 0 else index - 1
        new[at:at] = specs
    else:
        raise errors.InvalidArgument(f"unknown buildpacks action {action!r}")
    if len(set(new)) != len(new):
        raise errors.InvalidArgument("a buildpack may appear only once")
    return new


class Builds:
    def __init__(
        self,
        state: State,
        store: BuildStore,
        bus: BuildBus,
        *,
        max_source_bytes: int = archive.DEFAULT_MAX_BYTES,
        tmp_dir: Path | None = None,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        self.state = state
        self.store = store
        self.bus = bus
        self.max_source_bytes = max_source_bytes
        self.tmp_dir = tmp_dir

    def _too_large(self, size: int) -> errors.ResourceExhausted:
        return errors.ResourceExhausted(
            f"source archive is {archive.human_size(size)}; the limit is "
            f"{archive.human_size(self.max_source_bytes)}",
            reason="archive_too_large",
        )

    async def upload(
        self, meta: UploadMeta, chunks: AsyncIterator[bytes], actor: str
    ) -> BuildRecord:
        app = await self.state.get_app(meta.app)
        self.bus.nc  # noqa: B018 - fail before reading megabytes when NATS is down
        if meta.size > self.max_source_bytes:
            raise self._too_large(meta.size)
        work = Path(tempfile.mkdtemp(prefix="slipway-upload-", dir=self.tmp_dir))
        try:
            path = work / "source.tgz"
            digest = await self._receive(chunks, path)
            size = path.stat().st_size
            if meta.size and size != meta.size:
                raise errors.InvalidArgument(
                    f"upload ended after {size} bytes; {meta.size} were announced"
                )
            if meta.sha256 and digest != meta.sha256.lower():
                raise errors.InvalidArgument(
                    "source archive sha256 does not match the announced digest"
                )
            await asyncio.to_thread(
                archive.check_archive,
                path,
                max_bytes=self.max_source_bytes,
                what="source archive",
            )
            return await self._start(app, meta, path, digest, size, actor)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _receive(self, chunks: AsyncIterator[bytes], path: Path) -> str:
        h = hashlib.sha256()
        total = 0
        with open(path, "wb") as fh:
            async for chunk in chunks:
                if len(chunk) > MAX_CHUNK:
                    raise errors.InvalidArgument("upload chunks must be at most 1 MB")
                total += len(chunk)
                if total > self.max_source_bytes:
                    raise self._too_large(total)
                h.update(chunk)
                fh.write(chunk)
        if total == 0:
            raise errors.InvalidArgument("the upload carried no source bytes")
        return h.hexdigest()

    async def _start(
        self, app: AppRecord, meta: UploadMeta, path: Path, digest: str, size: int, actor: str
    ) -> BuildRecord:
        build_id = new_build_id()
        record = BuildRecord(
            id=build_id,
            app=app.name,
            source_digest=digest,
            source_size=size,
            source_version=meta.source_version or digest[:7],
            buildpacks=list(app.buildpacks),
            created_at=self.clock.now(),
            created_by=actor,
        )
        config = await self.state.get_config(app.name)
        await self.bus.stores.put_file(objstore.SOURCES, record.source_object, path)
        await self.store.create(record)
        job = buildproto.BuildJob(
            build_id=build_id,
            app=app.name,
            source=record.source_object,
            buildpacks=list(app.buildpacks),
            config=config,
            stack=app.build_stack,
        )
        try:
            await buildproto.submit(self.bus.js, job, replicas=self.bus.replicas)
        except Exception as exc:
            why = f"not queued: {exc}"
            await self.store.update(app.name, build_id, lambda r: _failed(r, why, self.clock.now()))
            raise errors.Unavailable(f"cannot queue the build on NATS: {exc}") from exc
        log.info("build queued", app=app.name, build=build_id, size=size)
        await self.bus.app_log(app.name, f"Build {build_id} started by {actor}")
        return record

    # -- buildpacks and caches --------------------------------------------

    async def set_buildpacks(
        self, name: str, action: str, specs: list[str], index: int
    ) -> list[str]:
        app = await self.state.get_app(name)
        if action == "list":
            return list(app.buildpacks)
        key = self.state.keys.app(name)
        result: list[list[str]] = []

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            raw = cur[key]
            if raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            record = AppRecord.decode(raw)
            record.buildpacks = buildpack_list(record.buildpacks, action, specs, index)
            result.append(record.buildpacks)
            return {key: record.encode()}

        await self.state.etcd.update([key], mutate)
        return result[-1]

    async def set_stack(self, name: str, stack: str) -> AppRecord:
        if stack not in stackimage.stack_names():
            known = ", ".join(stackimage.stack_names())
            raise errors.InvalidArgument(
                f"unknown stack {stack!r}; choose from {known}", reason="unknown_stack"
            )
        key = self.state.keys.app(name)
        await self.state.get_app(name)
        result: list[AppRecord] = []

        def mutate(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            raw = cur[key]
            if raw is None:
                raise errors.NotFound(f"app {name!r} not found", reason="app_not_found")
            record = AppRecord.decode(raw)
            record.build_stack = stack
            result.append(record)
            return {key: record.encode()}

        await self.state.etcd.update([key], mutate)
        await self.bus.app_log(name, f"Stack set to {stack}: the next build runs on it")
        return result[-1]

    async def purge_cache(self, name: str, confirm: str) -> bool:
        await self.state.get_app(name)
        if confirm != name:
            raise errors.FailedPrecondition(
                f"purging the build cache of {name!r} needs confirmation: pass --confirm {name}",
                reason="confirmation_required",
            )
        purged = await self.bus.stores.delete(objstore.CACHES, name)
        await self.bus.app_log(name, "Build cache purged")
        return purged


def _failed(record: BuildRecord, error: str, now: float) -> BuildRecord | None:
    if record.status in (FAILED, "succeeded"):
        return None
    record.status = FAILED
    record.error = error
    record.finished_at = now
    return record
