"""The builder's local copies of build caches: found by digest, replaced, evicted."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from builder.cachecopy import LocalCaches, hex_digest


def test_hex_digest_reads_the_object_store_form() -> None:
    raw = hashlib.sha256(b"cache").digest()
    store_form = "SHA-256=" + base64.urlsafe_b64encode(raw).decode()
    assert hex_digest(store_form) == raw.hex()
    assert hex_digest("sha-256=" + base64.urlsafe_b64encode(raw).decode()) == raw.hex()
    assert hex_digest("") is None
    assert hex_digest("MD5=abc") is None
    assert hex_digest("SHA-256=not base64!") is None
    assert hex_digest("SHA-256=" + base64.urlsafe_b64encode(b"short").decode()) is None


def write(path: Path, size: int) -> Path:
    path.write_bytes(b"x" * size)
    return path


def test_a_copy_is_found_only_under_its_own_digest(tmp_path: Path) -> None:
    caches = LocalCaches(tmp_path / "caches")
    assert caches.lookup("app", "aa") is None
    caches.keep("app", write(tmp_path / "one.tgz", 10), "aa")
    assert not (tmp_path / "one.tgz").exists()  # moved, not copied
    found = caches.lookup("app", "aa")
    assert found is not None and found.read_bytes() == b"x" * 10
    assert caches.lookup("app", "bb") is None
    assert caches.lookup("other", "aa") is None

    caches.keep("app", write(tmp_path / "two.tgz", 20), "bb")
    assert caches.lookup("app", "aa") is None  # the older copy is gone
    assert caches.lookup("app", "bb") is not None
    assert len(list((tmp_path / "caches" / "app").iterdir())) == 1

    caches.forget("app")
    assert caches.lookup("app", "bb") is None


def test_copies_beyond_the_budget_go_least_recently_used_first(tmp_path: Path) -> None:
    caches = LocalCaches(tmp_path / "caches", max_bytes=250)
    for n, app in enumerate(["a", "b", "c"]):
        caches.keep(app, write(tmp_path / f"{app}.tgz", 100), app * 2)
        path = tmp_path / "caches" / app / f"{app * 2}.tgz"
        os.utime(path, (1000 + n, 1000 + n))  # a used before b before c
    # Keeping c put the total at 300: a, the least recently used, went.
    assert caches.lookup("a", "aa") is None
    assert caches.lookup("b", "bb") is not None  # now b is the most recent
    caches.keep("d", write(tmp_path / "d.tgz", 100), "dd")
    assert caches.lookup("c", "cc") is None
    assert caches.lookup("b", "bb") is not None
    assert caches.lookup("d", "dd") is not None
