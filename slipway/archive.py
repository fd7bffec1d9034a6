"""Source and slug archives: pack, check, safe-unpack (tar.gz with a sha256 digest).

Used by the CLI (packs an app's source), the controller (checks an upload before
storing it), builders (unpack sources and caches, pack slugs) and agents (unpack
slugs for dynos).

Safety model: an archive is checked *as a whole* before a single byte lands on
disk (``check_archive``), then unpacked member by member with the same rules
applied again (``unpack``), so a hostile tarball cannot write outside the target
directory, create devices or fifos, or make a link that escapes. Refused:

- absolute member names and names with a ``..`` component;
- character/block devices, fifos and any other special type;
- hard links whose target is not an earlier, safe member name;
- symbolic links whose target resolves outside the archive root. Absolute
  symlinks are refused unless ``allow_absolute_symlinks`` (slugs legitimately
  hold ``.venv/bin/python3 -> /usr/bin/python3``: resolved inside the dyno's
  container, never on the host);
- any member whose path goes *through* a symlink member (``a -> /etc`` then
  ``a/passwd``), whatever the symlink's target;
- archives over a compressed size limit and contents over an unpacked size
  limit; the error message states the limit.

Errors are ``errors.InvalidArgument`` (reason ``unsafe_archive``) for unsafe
content and ``errors.ResourceExhausted`` (reason ``archive_too_large``) for size.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from slipway import errors

MB = 1024 * 1024
DEFAULT_MAX_BYTES = 200 * MB  # compressed upload size
DEFAULT_MAX_UNPACKED_BYTES = 1024 * MB  # guards against decompression bombs
_READ = 1024 * 1024


@dataclass(frozen=True)
class Packed:
    path: Path
    digest: str  # sha256 hex of the .tar.gz bytes
    size: int  # bytes of the .tar.gz


@dataclass(frozen=True)
class ArchiveInfo:
    members: int
    unpacked_bytes: int


def human_size(n: int) -> str:
    if n >= MB:
        return f"{n / MB:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ):
            h.update(chunk)
    return h.hexdigest()


def _unsafe(message: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(message, reason="unsafe_archive")


def _too_large(what: str, size: int, limit: int) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        f"{what} is {human_size(size)}; the limit is {human_size(limit)}",
        reason="archive_too_large",
    )


def _check_size(path: Path, max_bytes: int | None, what: str) -> int:
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise _too_large(what, size, max_bytes)
    return size


# ---------------------------------------------------------------- packing


# gzip level of every archive made here. Measured on a Django virtualenv (9,172
# files, 80 MB): level 6 took 1.9 s of compression for 16.1 MB, level 4 1.1 s
# for 17.2 MB (7% more bytes for 40% less time); levels 1 to 3 were no faster.
COMPRESS_LEVEL = 4


def pack_dir(
    src: Path,
    dest: Path,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    exclude: Callable[[str], bool] | None = None,
    what: str = "source archive",
) -> Packed:
    """Pack the contents of ``src`` (names relative to it) into ``dest`` (.tar.gz).

    Members are added in sorted order so the same tree gives the same listing.
    ``exclude(relpath)`` drops a file or a whole directory. Sockets and other
    special files are skipped: they cannot be shipped anyway. Hard links are
    stored as separate files.
    """
    src = src.resolve()
    # tarfile hands gzip every 512-byte header and block on its own, and each
    # small write costs a zlib call: buffered, packing a slug took half the time.
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz,
        io.BufferedWriter(gz, buffer_size=1 << 20) as buffered,
        tarfile.open(fileobj=buffered, mode="w") as tar,
    ):
        for rel in _walk(src, exclude):
            _add_member(tar, src / rel, rel)
    size = _check_size(dest, max_bytes, what)
    return Packed(path=dest, digest=sha256_file(dest), size=size)


def _add_member(tar: tarfile.TarFile, full: Path, rel: str) -> None:
    # tarfile.add would also look up user and group names for every member,
    # which took a third of the time of packing a slug.
    st = full.lstat()
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    if stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        with open(full, "rb") as f:
            tar.addfile(info, f)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
        tar.addfile(info)


TreeState = dict[str, tuple[int, int, int]]


def tree_state(root: Path) -> TreeState:
    """Every name under ``root`` with its mode, size and modification time:
    equal states mean nothing in the tree was written between them (contents
    are not read, so it is cheap for a large tree)."""
    root = root.resolve()
    state: TreeState = {}
    for rel in _walk(root, None):
        st = (root / rel).lstat()
        if stat.S_ISDIR(st.st_mode):
            # A directory's own time and size change whenever an entry comes
            # and goes, even one made and deleted again; its entries tell.
            state[rel] = (st.st_mode, 0, 0)
        else:
            state[rel] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


def changed_paths(before: TreeState, after: TreeState) -> list[str]:
    """Names added, removed or written between two states, sorted."""
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )


def _walk(root: Path, exclude: Callable[[str], bool] | None) -> Iterable[str]:
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if exclude is not None and exclude(rel):
                continue
            yield rel
            if entry.is_dir(follow_symlinks=False):
                stack.append(rel)


def is_git_checkout(path: Path) -> bool:
    """True when ``path`` is the top of a git work tree (``.git`` dir or file)."""
    return (path / ".git").exists()


async def pack_git_head(
    repo: Path, dest: Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> Packed:
    """Pack the HEAD tree of a git checkout with ``git archive`` (no shell)."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        str(repo),
        "archive",
        "--format=tar.gz",
        "-o",
        str(dest),
        "HEAD",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        dest.unlink(missing_ok=True)
        raise errors.FailedPrecondition(
            f"git archive HEAD failed in {repo}: {err.decode(errors='replace').strip()}"
        )
    size = _check_size(dest, max_bytes, "source archive")
    return Packed(path=dest, digest=sha256_file(dest), size=size)


async def pack_source(
    src: Path, dest: Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> Packed:
    """What ``slipway deploy DIR`` uploads: HEAD of a git checkout, else the directory."""
    if is_git_checkout(src):
        return await pack_git_head(src, dest, max_bytes=max_bytes)

    def skip_git(rel: str) -> bool:
        return rel == ".git"

    return await asyncio.to_thread(pack_dir, src, dest, max_bytes=max_bytes, exclude=skip_git)


# ---------------------------------------------------------------- checking


def _norm_member_name(name: str) -> str:
    """Validate a member name and return it normalised (no ``./``, no trailing ``/``)."""
    if not name or "\x00" in name:
        raise _unsafe(f"archive member has an invalid name: {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(f"archive member has an absolute path: {name}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(f"archive member path contains '..': {name}")
    return "/".join(parts)


def _link_escapes(member_dir: str, target: str) -> bool:
    """True when a relative symlink target in ``member_dir`` leaves the archive root."""
    depth = 0 if not member_dir else len(member_dir.split("/"))
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


class _Checker:
    """Applies the rules to members one at a time, remembering what came before."""

    def __init__(self, *, allow_absolute_symlinks: bool, max_unpacked_bytes: int | None) -> None:
        self.allow_absolute_symlinks = allow_absolute_symlinks
        self.max_unpacked_bytes = max_unpacked_bytes
        self.symlinks: set[str] = set()
        self.seen: set[str] = set()
        self.unpacked = 0
        self.members = 0

    def check(self, m: tarfile.TarInfo) -> str:
        name = _norm_member_name(m.name)
        self.members += 1
        if name:
            # Nothing may be written through a symlink that an earlier member made.
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in self.symlinks:
                    raise _unsafe(f"archive member {m.name} is beneath the symlink {parts[i - 1]}")
        if m.isdev() or m.isfifo():
            raise _unsafe(f"archive member {m.name} is a device or fifo")
        if m.issym():
            target = m.linkname
            if target.startswith("/"):
                if not self.allow_absolute_symlinks:
                    raise _unsafe(f"archive symlink {m.name} points outside: {target}")
            elif _link_escapes(posixpath.dirname(name), target):
                raise _unsafe(f"archive symlink {m.name} points outside: {target}")
            self.symlinks.add(name)
        elif m.islnk():
            target = _norm_member_name(m.linkname)
            if target not in self.seen or target in self.symlinks:
                raise _unsafe(f"archive hard link {m.name} points outside: {m.linkname}")
        elif not (m.isfile() or m.isdir()):
            raise _unsafe(f"archive member {m.name} has an unsupported type")
        else:
            self.symlinks.discard(name)
        if m.isfile():
            self.unpacked += m.size
            if self.max_unpacked_bytes is not None and self.unpacked > self.max_unpacked_bytes:
                raise _too_large("unpacked archive", self.unpacked, self.max_unpacked_bytes)
        self.seen.add(name)
        return name


def check_archive(
    path: Path,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_unpacked_bytes: int | None = DEFAULT_MAX_UNPACKED_BYTES,
    allow_absolute_symlinks: bool = False,
    what: str = "archive",
) -> ArchiveInfo:
    """Read the whole archive and refuse it if any member is unsafe. Writes nothing."""
    _check_size(path, max_bytes, what)
    checker = _Checker(
        allow_absolute_symlinks=allow_absolute_symlinks, max_unpacked_bytes=max_unpacked_bytes
    )
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                checker.check(m)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise errors.InvalidArgument(
            f"{what} is not a readable tar.gz: {exc}", reason="bad_archive"
        ) from exc
    return ArchiveInfo(members=checker.members, unpacked_bytes=checker.unpacked)


# ---------------------------------------------------------------- unpacking


def unpack(
    path: Path,
    dest: Path,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_unpacked_bytes: int | None = DEFAULT_MAX_UNPACKED_BYTES,
    allow_absolute_symlinks: bool = False,
    owner: tuple[int, int] | None = None,
    what: str = "archive",
) -> ArchiveInfo:
    """Check ``path`` completely, then unpack it into ``dest`` (created if missing).

    Set-id bits are dropped. Files are owned by ``owner`` (uid, gid) when given,
    else by the current user: never by the ids recorded in the archive.
    """
    info = check_archive(
        path,
        max_bytes=max_bytes,
        max_unpacked_bytes=max_unpacked_bytes,
        allow_absolute_symlinks=allow_absolute_symlinks,
        what=what,
    )
    dest.mkdir(parents=True, exist_ok=True)
    uid, gid = owner if owner is not None else (os.getuid(), os.getgid())
    # Second pass re-applies the same rules: the file could have changed between passes.
    checker = _Checker(
        allow_absolute_symlinks=allow_absolute_symlinks, max_unpacked_bytes=max_unpacked_bytes
    )

    def member_filter(m: tarfile.TarInfo, _dest: str) -> tarfile.TarInfo | None:
        name = checker.check(m)
        if not name:
            return None  # the root "." entry: dest already exists
        mode = m.mode & 0o777 if m.mode is not None else None
        return m.replace(
            name=name,
            mode=mode,
            uid=uid,
            gid=gid,
            uname="",
            gname="",
            linkname=_norm_member_name(m.linkname) if m.islnk() else m.linkname,
            deep=False,
        )

    with tarfile.open(path, "r:*") as tar:
        tar.extractall(dest, filter=member_filter)
    return info


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give a whole tree to one user without following symlinks."""
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), uid, gid)
