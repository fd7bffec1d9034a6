"""slipway.archive: crafted tarballs are refused before anything is written."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from slipway import archive, errors


def member(
    name: str,
    *,
    data: bytes = b"x",
    type: bytes = tarfile.REGTYPE,
    linkname: str = "",
    mode: int = 0o644,
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = type
    info.mode = mode
    info.linkname = linkname
    if type == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def make_tgz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([member("ok.txt"), member("../evil")], "contains '..'"),
        ([member("a/../../evil")], "contains '..'"),
        ([member("/etc/passwd")], "absolute path"),
        ([member("dev", type=tarfile.CHRTYPE)], "device or fifo"),
        ([member("blk", type=tarfile.BLKTYPE)], "device or fifo"),
        ([member("fifo", type=tarfile.FIFOTYPE)], "device or fifo"),
        ([member("link", type=tarfile.SYMTYPE, linkname="/etc/passwd")], "points outside"),
        ([member("a/link", type=tarfile.SYMTYPE, linkname="../../x")], "points outside"),
        ([member("hard", type=tarfile.LNKTYPE, linkname="/etc/shadow")], "absolute path"),
        ([member("hard", type=tarfile.LNKTYPE, linkname="../x")], "contains '..'"),
        ([member("hard", type=tarfile.LNKTYPE, linkname="not-there")], "points outside"),
        (
            [member("d", type=tarfile.SYMTYPE, linkname="sub"), member("d/file")],
            "beneath the symlink",
        ),
    ],
)
def test_unsafe_members_refused_before_unpacking(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    tgz = make_tgz(tmp_path / "bad.tgz", [member("first-safe-file"), *members])
    dest = tmp_path / "out"
    with pytest.raises(errors.InvalidArgument, match=message):
        archive.unpack(tgz, dest)
    # Nothing at all was written, not even the safe member that came first.
    assert not dest.exists() or not any(dest.iterdir())
    assert not (tmp_path / "evil").exists()


def test_absolute_symlink_allowed_only_when_asked(tmp_path: Path) -> None:
    tgz = make_tgz(
        tmp_path / "slug.tgz",
        [
            member(".venv/bin", type=tarfile.DIRTYPE, mode=0o755),
            member(".venv/bin/python3", type=tarfile.SYMTYPE, linkname="/usr/bin/python3"),
        ],
    )
    with pytest.raises(errors.InvalidArgument):
        archive.check_archive(tgz)
    archive.unpack(tgz, tmp_path / "out", allow_absolute_symlinks=True)
    assert os.readlink(tmp_path / "out/.venv/bin/python3") == "/usr/bin/python3"


def test_safe_links_and_setuid_dropped(tmp_path: Path) -> None:
    tgz = make_tgz(
        tmp_path / "ok.tgz",
        [
            member("bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
            member("bin/alias", type=tarfile.SYMTYPE, linkname="tool"),
            member("lib/up", type=tarfile.SYMTYPE, linkname="../bin/tool"),
            # a hard link shares its target's inode, so its mode applies to both
            member("bin/hard", type=tarfile.LNKTYPE, linkname="bin/tool", mode=0o4755),
        ],
    )
    info = archive.unpack(tgz, tmp_path / "out")
    assert info.members == 4
    out = tmp_path / "out"
    assert (out / "bin/hard").read_bytes() == b"#!/bin/sh\n"
    assert (out / "bin/tool").stat().st_mode & 0o7777 == 0o755
    assert os.readlink(out / "lib/up") == "../bin/tool"


def test_size_limits_state_the_limit(tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "big.tgz", [member("big", data=os.urandom(300_000))])
    with pytest.raises(errors.ResourceExhausted, match=r"the limit is 1\.0 KB"):
        archive.check_archive(tgz, max_bytes=1024)
    with pytest.raises(
        errors.ResourceExhausted, match=r"unpacked archive .* the limit is 100\.0 KB"
    ):
        archive.check_archive(tgz, max_unpacked_bytes=100 * 1024)


def test_not_a_tarball(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(errors.InvalidArgument, match=r"not a readable tar\.gz"):
        archive.check_archive(junk)


def test_pack_dir_round_trip_and_digest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub/b.txt").write_text("b")
    (src / "link").symlink_to("a.txt")
    packed = archive.pack_dir(src, tmp_path / "p.tgz", exclude=lambda rel: rel == "sub/b.txt")
    assert packed.digest == archive.sha256_file(packed.path)
    with tarfile.open(packed.path) as tar:
        assert tar.getnames() == ["a.txt", "link", "sub"]
    archive.unpack(packed.path, tmp_path / "out")
    assert (tmp_path / "out/a.txt").read_text() == "a"
    assert os.readlink(tmp_path / "out/link") == "a.txt"


def test_pack_dir_keeps_modes_and_hard_links_and_skips_sockets(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    run = src / "bin/run"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    os.link(run, src / "bin/again")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "control.sock"))
    try:
        packed = archive.pack_dir(src, tmp_path / "p.tgz")
    finally:
        sock.close()
    with tarfile.open(packed.path) as tar:
        assert tar.getnames() == ["bin", "bin/again", "bin/run"]
    archive.unpack(packed.path, tmp_path / "out")
    for name in ("run", "again"):
        unpacked = tmp_path / "out/bin" / name
        assert unpacked.read_text() == "#!/bin/sh\necho hi\n"
        assert unpacked.stat().st_mode & 0o777 == 0o755


def test_pack_dir_size_limit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "r").write_bytes(os.urandom(50_000))
    with pytest.raises(
        errors.ResourceExhausted, match=r"source archive is .* the limit is 10\.0 KB"
    ):
        archive.pack_dir(src, tmp_path / "p.tgz", max_bytes=10 * 1024)


def test_pack_source_uses_git_head_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (repo / "committed.txt").write_text("in HEAD")
    git("add", "committed.txt")
    git("commit", "-qm", "one")
    (repo / "untracked.txt").write_text("not in HEAD")
    packed = asyncio.run(archive.pack_source(repo, tmp_path / "src.tgz"))
    with tarfile.open(packed.path) as tar:
        names = tar.getnames()
    assert "committed.txt" in names and "untracked.txt" not in names
    archive.check_archive(packed.path)

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x").write_text("x")
    packed = asyncio.run(archive.pack_source(plain, tmp_path / "plain.tgz"))
    with tarfile.open(packed.path) as tar:
        assert tar.getnames() == ["x"]


def test_tree_state_tells_which_paths_a_build_wrote(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels/a.whl").write_bytes(b"a")
    (tmp_path / "key").write_text("1")
    before = archive.tree_state(tmp_path)
    assert archive.changed_paths(before, archive.tree_state(tmp_path)) == []
    (tmp_path / "key").write_text("22")
    (tmp_path / "wheels/b.whl").write_bytes(b"b")
    (tmp_path / "wheels/a.whl").unlink()
    assert archive.changed_paths(before, archive.tree_state(tmp_path)) == [
        "key",
        "wheels/a.whl",
        "wheels/b.whl",
    ]
    # A file made and deleted again leaves the tree as it was.
    again = archive.tree_state(tmp_path)
    (tmp_path / "wheels/tmp").write_text("x")
    (tmp_path / "wheels/tmp").unlink()
    assert archive.changed_paths(again, archive.tree_state(tmp_path)) == []
