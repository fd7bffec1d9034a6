"""Folders for engines that run as their own system user (postgres, redis)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def searchable_dir(prefix: str) -> Iterator[Path]:
    """Not under pytest's tmp dirs: those are 0700 to root, and the engine's user
    must be able to reach its data."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
