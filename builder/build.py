"""One build attempt from source object to stored slug.

    sources/{job.source} -> check + unpack -> work/app
    caches/{app}         -> unpack         -> work/tmp/cache   (a local copy when identical)
    Pipeline (detect, compile, release in the sandbox)
    work/app -> slug tar.gz -> slugs/{sha256}
    work/tmp/cache -> caches/{app}         (only after success)

Failures the user must fix raise ``BuildFailed`` (never retried); anything
else (object store unreachable, sandbox broken) propagates so the job layer
can hand the job to another attempt.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from builder import buildpacks as bp
from builder import slug as slugs
from builder.cachecopy import LocalCaches, hex_digest
from builder.pipeline import Pipeline, Workdir
from builder.sandbox import OnLine, Sandbox
from slipway import archive, errors, log, objstore
from slipway.buildproto import BuildJob

_log = log.get("builder.build")


@dataclass(frozen=True)
class Limits:
    build_timeout: float = 15 * 60.0
    slug_warn_bytes: int = slugs.DEFAULT_WARN_MB * archive.MB
    slug_max_bytes: int = slugs.DEFAULT_MAX_MB * archive.MB
    source_max_bytes: int = archive.DEFAULT_MAX_BYTES
    source_max_unpacked_bytes: int = archive.DEFAULT_MAX_UNPACKED_BYTES
    cache_max_bytes: int = 1024 * archive.MB


class BuildRunner:
    def __init__(
        self,
        stores: objstore.ObjectStores,
        sandbox: Sandbox,
        work_root: Path,
        limits: Limits,
        local_caches: LocalCaches | None = None,
    ) -> None:
        self._stores = stores
        self._local_caches = local_caches
        self._sandbox = sandbox
        self._work_root = work_root
        self._limits = limits
        self._pipeline = Pipeline(sandbox, compile_timeout=limits.build_timeout)

    async def run(self, job: BuildJob, attempt: int, out: OnLine) -> slugs.SlugManifest:
        if job.stack and job.stack != self._sandbox.stack_name:
            raise bp.BuildFailed(
                f"stack {job.stack} is not available on this builder "
                f"(it builds on {self._sandbox.stack_name})"
            )
        work = Workdir(self._work_root / f"{job.build_id}-{attempt}")
        if work.root.exists():
            await asyncio.to_thread(shutil.rmtree, work.root)
        work.create()
        try:
            return await self._run(job, work, out)
        finally:
            await asyncio.to_thread(shutil.rmtree, work.root, True)

    async def _run(self, job: BuildJob, work: Workdir, out: OnLine) -> slugs.SlugManifest:
        started = time.monotonic()
        await self._fetch_source(job, work)
        restored = await self._restore_cache(job, work, out)
        outcome = await self._pipeline.run(work, job.buildpacks, job.config, out)

        await out("-----> Compressing slug")
        slug = await asyncio.to_thread(
            slugs.make_slug,
            work.app,
            work.root / "slug.tgz",
            warn_bytes=self._limits.slug_warn_bytes,
            max_bytes=self._limits.slug_max_bytes,
        )
        await out(f"       Done: {archive.human_size(slug.size)}")
        if slug.warning:
            await out(f"-----> {slug.warning}")
        if not await self._stores.exists(objstore.SLUGS, slug.digest):
            await self._stores.put_file(objstore.SLUGS, slug.digest, slug.path)
        await self._save_cache(job, work, out, restored)

        types = outcome.process_types
        await out(
            "-----> Discovering process types: "
            + (", ".join(sorted(types.types)) or "none")
            + (" (release phase command found)" if types.release_command else "")
        )
        await out(f"       Slug sha256:{slug.digest[:12]} ready for release")
        _log.info(
            "build compiled",
            app=job.app,
            build=job.build_id,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        return slugs.manifest(
            slug, stack=self._sandbox.stack_name, types=types, buildpacks=outcome.buildpacks
        )

    async def _fetch_source(self, job: BuildJob, work: Workdir) -> None:
        tgz = work.root / "source.tgz"
        try:
            await self._stores.get_file(objstore.SOURCES, job.source, tgz)
        except errors.NotFound as exc:
            raise bp.BuildFailed(f"Source {job.source} was not found in the object store") from exc
        try:
            # unpack() checks every member before writing the first one.
            await asyncio.to_thread(
                archive.unpack,
                tgz,
                work.app,
                max_bytes=self._limits.source_max_bytes,
                max_unpacked_bytes=self._limits.source_max_unpacked_bytes,
                owner=(self._sandbox.uid, self._sandbox.gid),
                what="source archive",
            )
        except (errors.InvalidArgument, errors.ResourceExhausted) as exc:
            raise bp.BuildFailed(f"Source archive refused: {exc}") from exc
        finally:
            tgz.unlink(missing_ok=True)

    async def _restore_cache(
        self, job: BuildJob, work: Workdir, out: OnLine
    ) -> archive.TreeState | None:
        """Unpack the app's build cache into ``work.cache``; the state of what
        was restored (see archive.tree_state), None if nothing was."""
        try:
            tgz, reused, is_copy = await self._fetch_cache(job.app, work)
        except errors.NotFound:
            if self._local_caches is not None:
                await asyncio.to_thread(self._local_caches.forget, job.app)
            await out("-----> No build cache for this app yet")
            return None
        try:
            info = await asyncio.to_thread(
                archive.unpack,
                tgz,
                work.cache,
                max_bytes=self._limits.cache_max_bytes,
                max_unpacked_bytes=4 * self._limits.cache_max_bytes,
                owner=(self._sandbox.uid, self._sandbox.gid),
                what="build cache",
            )
            await out(
                f"-----> Restoring build cache ({archive.human_size(tgz.stat().st_size)}, "
                f"{info.members} entries{', copy kept on this builder' if reused else ''})"
            )
            return await asyncio.to_thread(archive.tree_state, work.cache)
        except (errors.InvalidArgument, errors.ResourceExhausted) as exc:
            # A bad cache must never fail a build: start from an empty one.
            await out(f"-----> Build cache ignored: {exc}")
            await asyncio.to_thread(shutil.rmtree, work.cache, True)
            work.cache.mkdir(parents=True, exist_ok=True)
            if self._local_caches is not None:
                await asyncio.to_thread(self._local_caches.forget, job.app)
            return None
        finally:
            if not is_copy:
                tgz.unlink(missing_ok=True)

    async def _fetch_cache(self, app: str, work: Workdir) -> tuple[Path, bool, bool]:
        """The app's cache archive; whether it was this builder's copy, identical
        to the store's by digest (no download); and whether the path is that
        copy's (to keep) rather than a download's (to delete). NotFound when the
        store has none."""
        copies = self._local_caches
        if copies is not None:
            wanted = hex_digest(await self._stores.digest(objstore.CACHES, app))
            if wanted is not None and (path := copies.lookup(app, wanted)) is not None:
                return path, True, True
        tgz = work.root / "cache.tgz"
        await self._stores.get_file(objstore.CACHES, app, tgz)
        if copies is None:
            return tgz, False, False
        # The digest of the bytes fetched, not of the info read before: the
        # object may have been replaced in between.
        digest = await asyncio.to_thread(archive.sha256_file, tgz)
        await asyncio.to_thread(copies.keep, app, tgz, digest)
        kept = copies.lookup(app, digest)
        return (kept, False, True) if kept is not None else (tgz, False, False)

    async def _save_cache(
        self, job: BuildJob, work: Workdir, out: OnLine, restored: archive.TreeState | None
    ) -> None:
        changed: list[str] = []
        if restored is not None:
            now = await asyncio.to_thread(archive.tree_state, work.cache)
            changed = archive.changed_paths(restored, now)
            if not changed:
                # The stored cache is still exact: packing and uploading it again
                # took seconds of every warm build.
                await out("-----> Build cache unchanged")
                return
        tgz = work.root / "cache-new.tgz"
        try:
            packed = await asyncio.to_thread(
                archive.pack_dir,
                work.cache,
                tgz,
                max_bytes=self._limits.cache_max_bytes,
                what="build cache",
            )
        except errors.ResourceExhausted as exc:
            await out(f"-----> Build cache not saved: {exc}")
            return
        await self._stores.put_file(objstore.CACHES, job.app, packed.path)
        if self._local_caches is not None:
            await asyncio.to_thread(self._local_caches.keep, job.app, packed.path, packed.digest)
        await out(f"-----> Saving build cache ({archive.human_size(packed.size)})")
        if changed:
            # Says which buildpack step keeps a warm build from reusing the cache.
            shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
            await out(f"       {len(changed)} path(s) changed since the last build: {shown}")
