"""Slugs unpacked once per node, keyed by digest, shared read-only by dynos.

    DATA/slugs/{digest}/        the unpacked slug (owned by the sandbox user)
    DATA/slugs/{digest}.tgz     the downloaded tarball, removed after unpacking

A download is verified against its sha256 before anything is unpacked, and
unpacking refuses absolute paths, ``..``, device files, and links that point
outside the slug, so a hostile tarball cannot touch the node. Heroku-style
slugs whose every entry lives under ``./app/`` are unpacked without that
prefix, so both layouts work.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shutil
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.logs import nats_error
from slipway import errors, log, objstore
from slipway.oci.stack import SANDBOX_GID, SANDBOX_UID
from slipway.pki import Bundle

logger = log.get("agent.slugs")

# Fetches one object into a local path: (digest, destination) -> None.
Fetch = Callable[[str, Path], Awaitable[None]]


def _strip(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def check_member(member: tarfile.TarInfo) -> str | None:
    """The member's safe relative path, or raise InvalidArgument.

    Returns None for entries that are only the archive root (".").
    """
    name = _strip(member.name).rstrip("/")
    if name in ("", "."):
        return None
    if member.name.startswith("/") or posixpath.isabs(name):
        raise errors.InvalidArgument(f"slug entry has an absolute path: {member.name}")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise errors.InvalidArgument(f"slug entry leaves the slug: {member.name}")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise errors.InvalidArgument(f"slug entry is a device or fifo: {member.name}")
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            raise errors.InvalidArgument(f"slug link points outside: {member.name} -> {target}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(norm), target))
        if resolved == ".." or resolved.startswith("../"):
            raise errors.InvalidArgument(f"slug link points outside: {member.name} -> {target}")
    if member.islnk():
        target = posixpath.normpath(_strip(member.linkname))
        if target.startswith("/") or target == ".." or target.startswith("../"):
            raise errors.InvalidArgument(f"slug hard link points outside: {member.name}")
    return norm


def _app_prefixed(names: list[str]) -> bool:
    """True when every entry lives under app/ (Heroku's slug layout)."""
    return bool(names) and all(n == "app" or n.startswith("app/") for n in names)


def unpack(tarball: Path, dest: Path, *, uid: int = SANDBOX_UID, gid: int = SANDBOX_GID) -> None:
    """Unpack a slug safely into ``dest`` (which must not exist yet)."""
    with tarfile.open(tarball, "r:*") as tar:
        members = tar.getmembers()
        checked = [(m, check_member(m)) for m in members]
        names = [n for _, n in checked if n is not None]
        strip_app = _app_prefixed(names)
        dest.mkdir(parents=True)
        for member, name in checked:
            if name is None:
                continue
            if strip_app:
                name = name[len("app/") :] if name != "app" else ""
                if not name:
                    continue
            member.name = name
            if member.islnk():
                link = check_member_link(member.linkname, strip_app)
                member.linkname = link
            # The "data" filter re-checks paths and drops setuid bits and
            # ownership; ownership is then given to the sandbox user.
            tar.extract(member, dest, filter="data")
    _chown_tree(dest, uid, gid)


def check_member_link(linkname: str, strip_app: bool) -> str:
    name = posixpath.normpath(_strip(linkname))
    if strip_app and name.startswith("app/"):
        name = name[len("app/") :]
    return name


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return  # tests as non-root: leave ownership as is
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, gid)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


class SlugCache:
    def __init__(self, data_dir: Path, fetch: Fetch) -> None:
        self.root = data_dir / "slugs"
        self._fetch = fetch
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, digest: str) -> Path:
        return self.root / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_dir()

    async def ensure(self, digest: str) -> Path:
        """The unpacked slug's directory, downloading it on first use."""
        if not digest or any(c not in "0123456789abcdef" for c in digest):
            raise errors.InvalidArgument(f"bad slug digest {digest!r}")
        target = self.path(digest)
        if target.is_dir():
            return target
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if target.is_dir():
                return target
            started = time.monotonic()
            self.root.mkdir(parents=True, exist_ok=True)
            tarball = self.root / f"{digest}.tgz"
            await self._fetch(digest, tarball)
            try:
                await asyncio.to_thread(self._verify_and_unpack, digest, tarball, target)
            finally:
                tarball.unlink(missing_ok=True)
            logger.info(
                "slug cached",
                slug=digest[:12],
                duration_ms=round((time.monotonic() - started) * 1000),
            )
        return target

    def _verify_and_unpack(self, digest: str, tarball: Path, target: Path) -> None:
        actual = sha256_file(tarball)
        if actual != digest:
            raise errors.FailedPrecondition(
                f"slug {digest[:12]} failed verification (got {actual[:12]})",
                reason="slug_digest_mismatch",
            )
        tmp = self.root / f".{digest}.unpacking"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            unpack(tarball, tmp)
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise errors.InvalidArgument(f"slug {digest[:12]} cannot be unpacked: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(target)

    def remove_unused(self, in_use: set[str]) -> list[str]:
        """Delete cached slugs no dyno uses (garbage collection; disks fill up)."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in in_use:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


class ObjectStoreFetch:
    """Fetches slugs from the JetStream object store over one lazy connection."""

    def __init__(
        self, servers: list[str] | tuple[str, ...], *, credentials: Bundle | None = None
    ) -> None:
        self._servers = list(servers)
        self._credentials = credentials
        self._nc: object | None = None
        self._stores: objstore.ObjectStores | None = None
        self._lock = asyncio.Lock()

    async def _get_stores(self) -> objstore.ObjectStores:
        async with self._lock:
            if self._stores is None:
                nc = await objstore.connect(
                    self._servers,
                    name="slipway-agent-slugs",
                    credentials=self._credentials,
                    error_cb=nats_error,
                )
                self._nc = nc
                # With credentials a node may not create the bucket (the controller does).
                self._stores = objstore.ObjectStores(
                    nc.jetstream(), create=self._credentials is None
                )
            return self._stores

    async def __call__(self, digest: str, dest: Path) -> None:
        stores = await self._get_stores()
        await stores.get_file(objstore.SLUGS, digest, dest)

    async def close(self) -> None:
        nc, self._nc, self._stores = self._nc, None, None
        if nc is not None:
            await nc.close()  # type: ignore[attr-defined]
