"""Slug unpacking safety and the cache, without NATS."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from agent.slugcache import SlugCache, check_member, unpack
from slipway import errors
from tests.harness.slugs import build_slug


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    "bad",
    [
        member("/etc/passwd"),
        member("../escape"),
        member("app/../../escape"),
        member("dev", tarfile.CHRTYPE),
        member("blk", tarfile.BLKTYPE),
        member("fifo", tarfile.FIFOTYPE),
        member("link", tarfile.SYMTYPE, "/etc/passwd"),
        member("a/link", tarfile.SYMTYPE, "../../etc"),
        member("hard", tarfile.LNKTYPE, "../outside"),
    ],
    ids=lambda m: f"{m.name}->{m.linkname}" if m.linkname else m.name,
)
def test_dangerous_members_are_refused(bad: tarfile.TarInfo) -> None:
    with pytest.raises(errors.InvalidArgument):
        check_member(bad)


@pytest.mark.parametrize(
    ("ok", "name"),
    [
        (member("./Procfile"), "Procfile"),
        (member("a/b/c.txt"), "a/b/c.txt"),
        (member("a/link", tarfile.SYMTYPE, "../b"), "a/link"),
        (member("bin/py", tarfile.SYMTYPE, "python3"), "bin/py"),
        (member(".", tarfile.DIRTYPE), None),
    ],
)
def test_safe_members(ok: tarfile.TarInfo, name: str | None) -> None:
    assert check_member(ok) == name


@pytest.mark.parametrize("app_prefix", [False, True])
def test_unpack_both_layouts(tmp_path: Path, app_prefix: bool) -> None:
    blob, types = build_slug(app_prefix=app_prefix)
    tgz = tmp_path / "slug.tgz"
    tgz.write_bytes(blob)
    unpack(tgz, tmp_path / "out")
    assert (tmp_path / "out" / "Procfile").read_text().startswith("web: python3 server.py")
    assert (tmp_path / "out" / ".profile.d" / "greet.sh").exists()
    assert types["web"] == "python3 server.py"


def test_unpack_refuses_a_hostile_archive_before_writing(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("fine.txt")
        tar.addfile(info, io.BytesIO(b""))
        tar.addfile(member("evil", tarfile.SYMTYPE, "/etc/shadow"))
    tgz = tmp_path / "bad.tgz"
    tgz.write_bytes(raw.getvalue())
    with pytest.raises(errors.InvalidArgument):
        unpack(tgz, tmp_path / "out")
    assert not (tmp_path / "out").exists()


async def test_cache_verifies_digest_and_fetches_once(tmp_path: Path) -> None:
    blob, _ = build_slug()
    digest = hashlib.sha256(blob).hexdigest()
    fetched: list[str] = []

    async def fetch(name: str, dest: Path) -> None:
        fetched.append(name)
        dest.write_bytes(blob if name == digest else b"not the slug")

    cache = SlugCache(tmp_path, fetch)
    path = await cache.ensure(digest)
    assert (path / "server.py").exists()
    assert await cache.ensure(digest) == path
    assert fetched == [digest]

    wrong = "0" * 64
    with pytest.raises(errors.FailedPrecondition):
        await cache.ensure(wrong)
    assert not cache.has(wrong)
    with pytest.raises(errors.InvalidArgument):
        await cache.ensure("../../etc")
    assert cache.remove_unused({digest}) == []
    assert cache.remove_unused(set()) == [digest]
