"""Slugs: the compiled /app as a tar.gz with a sha256 digest, plus its manifest.

Layout inside the tarball: paths relative to /app (``server.py``,
``.venv/bin/python``, ``.profile.d/python.sh``), no leading ``./``. Agents unpack
a slug into the dyno's /app with ``slipway.archive.unpack(...,
allow_absolute_symlinks=True)``: venvs hold links such as
``.venv/bin/python3 -> /usr/bin/python3`` that resolve on the stack.

Size: a warning above ``warn_bytes`` (Heroku: 300 MB), a failure above
``max_bytes`` (Heroku: 500 MB); both measured on the compressed slug.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder import buildpacks as bp
from slipway import archive

DEFAULT_WARN_MB = 300
DEFAULT_MAX_MB = 500


@dataclass(frozen=True)
class Slug:
    path: Path
    digest: str
    size: int
    warning: str | None = None


@dataclass(frozen=True)
class SlugManifest:
    digest: str
    size: int
    stack: str
    process_types: dict[str, str]
    release_command: str | None
    buildpacks: list[str] = field(default_factory=list)
    created_at: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_size(size: int, *, warn_bytes: int, max_bytes: int) -> str | None:
    """None when fine, a warning sentence when big; raises BuildFailed when too big."""
    if size > max_bytes:
        raise bp.BuildFailed(
            f"Slug size {archive.human_size(size)} exceeds the limit of "
            f"{archive.human_size(max_bytes)}. Remove files with .slugignore."
        )
    if size > warn_bytes:
        return (
            f"Warning: slug size {archive.human_size(size)} exceeds the soft limit of "
            f"{archive.human_size(warn_bytes)}, which may slow down dyno start"
        )
    return None


def make_slug(app_dir: Path, dest: Path, *, warn_bytes: int, max_bytes: int) -> Slug:
    """Pack ``app_dir`` into ``dest``; blocking (run it in a thread)."""
    packed = archive.pack_dir(app_dir, dest, max_bytes=None, what="slug")
    warning = check_size(packed.size, warn_bytes=warn_bytes, max_bytes=max_bytes)
    return Slug(path=dest, digest=packed.digest, size=packed.size, warning=warning)


def manifest(
    slug: Slug, *, stack: str, types: bp.ProcessTypes, buildpacks: Sequence[str]
) -> SlugManifest:
    return SlugManifest(
        digest=slug.digest,
        size=slug.size,
        stack=stack,
        process_types=dict(types.types),
        release_command=types.release_command,
        buildpacks=list(buildpacks),
        created_at=time.time(),
    )
