"""The builder's own copy of each app's build cache.

The object store holds the one true cache of every app (``caches/{app}``);
fetching it over NATS was most of what a warm build spent before its first
buildpack ran. A builder keeps the last copy it fetched or saved, under a name
made from its SHA-256 digest, and uses it only while the store's object has
that same digest: a copy is never trusted for being recent, only for being
identical. Copies are evicted oldest-used first beyond a byte budget.

    {root}/{app}/{digest}.tgz
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import uuid
from pathlib import Path

from slipway import log

_log = log.get("builder.cachecopy")

DEFAULT_MAX_BYTES = 4 * 1024 * 1024 * 1024
# nats-py's ObjectInfo.digest: "SHA-256=" and the urlsafe base64 of the raw sum.
_DIGEST_PREFIX = "SHA-256="


def hex_digest(store_digest: str) -> str | None:
    """The hex sha256 an object store digest names; None if it names none."""
    if not store_digest.upper().startswith(_DIGEST_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(store_digest[len(_DIGEST_PREFIX) :])
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


class LocalCaches:
    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._root = root
        self._max_bytes = max_bytes

    def lookup(self, app: str, sha256_hex: str) -> Path | None:
        """The local copy with this digest, if this builder has it."""
        path = self._root / app / f"{sha256_hex}.tgz"
        try:
            os.utime(path)  # marks it used, for eviction
        except FileNotFoundError:
            return None
        return path

    def keep(self, app: str, src: Path, sha256_hex: str) -> None:
        """Move ``src`` (whose sha256 is ``sha256_hex``) in as the app's copy,
        replacing any other; then evict beyond the budget."""
        folder = self._root / app
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{sha256_hex}.tgz"
        # A rename within the folder is atomic: a build reading the old copy
        # keeps its open file, and no reader sees a half-written one.
        staging = folder / f".{uuid.uuid4().hex}.part"
        shutil.move(src, staging)
        staging.replace(dest)
        for other in folder.iterdir():
            if other != dest:
                other.unlink(missing_ok=True)
        self.evict()

    def forget(self, app: str) -> None:
        """Drop the app's copy (its cache was purged or is gone from the store)."""
        shutil.rmtree(self._root / app, ignore_errors=True)

    def evict(self) -> None:
        if not self._root.is_dir():
            return
        copies: list[tuple[float, int, Path]] = []
        for folder in self._root.iterdir():
            for path in folder.glob("*.tgz") if folder.is_dir() else ():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                copies.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in copies)
        for _, size, path in sorted(copies):
            if total <= self._max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            _log.info("local build cache copy evicted", path=str(path), bytes=size)
