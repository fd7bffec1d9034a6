"""The buildpack runner: resolve buildpacks, apply .slugignore, detect, compile, release.

Heroku's buildpack API, as the build sees it inside the sandbox:

    bin/detect  /app                      exit 0 and print a name, or exit 1
    bin/compile /app /tmp/cache /tmp/env  stream `-----> ` steps, exit 0 on success
    bin/release /app                      print YAML with default_process_types

Several buildpacks run in order; each may write ``export`` at its own root and
the later ones start with it sourced. An empty list means auto-detect among the
built-ins (python, nodejs, go, java, procfile), first match wins. Process types: the
Procfile wins over every buildpack's ``default_process_types`` (later buildpacks
override earlier ones); a ``release`` type is the release-phase command and is
not a dyno formation type.

Pure helpers (Procfile, release YAML, .slugignore, resolution) are separate
from the steps that run programs, so they are unit-tested without containers.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import shutil
import stat
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from slipway import archive, errors

BUILTIN_DIR = Path(__file__).resolve().parent / "buildpacks"
BUILTIN_ORDER = ("python", "nodejs", "go", "java", "procfile")
RELEASE_TYPE = "release"
_PROC_RE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
_MAX_META_FILE = 256 * 1024  # Procfile / .slugignore read from untrusted build dirs
_MAX_BUILDPACK_BYTES = 100 * archive.MB
_FETCH_TIMEOUT = 120.0


class BuildFailed(errors.FailedPrecondition):
    """The app's build failed for a reason the user must fix (not retried)."""

    reason = "build_failed"


@dataclass(frozen=True)
class Buildpack:
    name: str  # "python", or the path / URL the user gave
    path: Path  # directory holding bin/detect, bin/compile, ...


@dataclass
class ProcessTypes:
    types: dict[str, str] = field(default_factory=dict)
    release_command: str | None = None


# ---------------------------------------------------------------- pure helpers


def parse_procfile(text: str) -> dict[str, str]:
    """``type: command`` lines; comments and malformed lines are ignored, last one wins."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _PROC_RE.match(line)
        if m:
            result[m.group(1)] = m.group(2).strip()
    return result


def parse_release_yaml(text: str, *, buildpack: str = "buildpack") -> dict[str, str]:
    """``default_process_types`` from a ``bin/release`` output (empty output: none)."""
    if not text.strip():
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BuildFailed(f"{buildpack} bin/release printed invalid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise BuildFailed(f"{buildpack} bin/release must print a YAML mapping")
    types = doc.get("default_process_types") or {}
    if not isinstance(types, dict):
        raise BuildFailed(f"{buildpack} bin/release: default_process_types must be a mapping")
    return {str(k): str(v) for k, v in types.items() if v is not None}


def merge_process_types(
    procfile: Mapping[str, str] | None, defaults: Sequence[Mapping[str, str]]
) -> ProcessTypes:
    """Procfile wins; among buildpacks, a later one overrides an earlier one."""
    merged: dict[str, str] = {}
    for d in defaults:
        merged.update(d)
    merged.update(procfile or {})
    release = merged.pop(RELEASE_TYPE, None)
    return ProcessTypes(types=merged, release_command=release)


def parse_slugignore(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def slugignore_matches(patterns: Sequence[str], relpath: str, is_dir: bool) -> bool:
    """gitignore-like: ``/x`` anchors at the root, ``x/`` only matches directories,
    a pattern without ``/`` matches a name at any depth."""
    name = relpath.rsplit("/", 1)[-1]
    for pattern in patterns:
        pat = pattern
        if pat.endswith("/"):
            if not is_dir:
                continue
            pat = pat.rstrip("/")
        if pat.startswith("/"):
            if fnmatch.fnmatchcase(relpath, pat.lstrip("/")):
                return True
        elif "/" in pat:
            if fnmatch.fnmatchcase(relpath, pat):
                return True
        elif fnmatch.fnmatchcase(name, pat):
            return True
    return False


def read_small_file(path: Path) -> str | None:
    """Read a regular file from an untrusted tree without following symlinks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        return fh.read(_MAX_META_FILE).decode(errors="replace")


def apply_slugignore(app_dir: Path) -> list[str]:
    """Delete what ``.slugignore`` names, before compile; returns removed paths."""
    text = read_small_file(app_dir / ".slugignore")
    if text is None:
        return []
    patterns = parse_slugignore(text)
    removed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(app_dir):
        rel_dir = os.path.relpath(dirpath, app_dir)
        rel_dir = "" if rel_dir == "." else rel_dir
        for d in list(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            full = Path(dirpath, d)
            if slugignore_matches(patterns, rel, is_dir=not full.is_symlink()):
                dirnames.remove(d)
                if full.is_symlink():
                    full.unlink()
                else:
                    shutil.rmtree(full)
                removed.append(rel)
        for f in filenames:
            rel = f"{rel_dir}/{f}" if rel_dir else f
            if slugignore_matches(patterns, rel, is_dir=False):
                Path(dirpath, f).unlink()
                removed.append(rel)
    return sorted(removed)


def write_env_dir(env_dir: Path, config: Mapping[str, str]) -> None:
    """ENV_DIR: one file per config var, named by the key, holding the value."""
    env_dir.mkdir(parents=True, exist_ok=True)
    for key, value in config.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise errors.InvalidArgument(f"config var name {key!r} is not valid")
        (env_dir / key).write_text(value)
        (env_dir / key).chmod(0o644)
    env_dir.chmod(0o755)


# ---------------------------------------------------------------- resolution


def classify(spec: str) -> str:
    """``builtin`` | ``path`` | ``tarball`` | ``git`` for one buildpack spec."""
    if spec in BUILTIN_ORDER:
        return "builtin"
    if spec.startswith(("http://", "https://", "file://", "git://", "ssh://", "git@")):
        url = spec.split("#", 1)[0]
        if url.endswith((".tgz", ".tar.gz", ".tar")):
            return "tarball"
        return "git"
    if spec.startswith(("/", "./", "../", "~")) or os.sep in spec:
        return "path"
    raise errors.InvalidArgument(
        f"unknown buildpack {spec!r}: use one of {', '.join(BUILTIN_ORDER)}, "
        "a local path, or a URL to a tarball or git repository"
    )


def builtins() -> list[Buildpack]:
    return [Buildpack(name=n, path=BUILTIN_DIR / n) for n in BUILTIN_ORDER]


def _validate(bp: Buildpack) -> Buildpack:
    for script in ("detect", "compile"):
        if not (bp.path / "bin" / script).is_file():
            raise BuildFailed(f"buildpack {bp.name} has no bin/{script}")
    return bp


async def resolve(specs: Sequence[str], fetch_dir: Path) -> list[Buildpack]:
    """Turn the app's buildpack list into directories; URLs are fetched into ``fetch_dir``."""
    result: list[Buildpack] = []
    for i, spec in enumerate(specs):
        kind = classify(spec)
        if kind == "builtin":
            result.append(Buildpack(name=spec, path=BUILTIN_DIR / spec))
        elif kind == "path":
            path = Path(spec).expanduser()
            if not path.is_dir():
                raise BuildFailed(f"buildpack path {spec} is not a directory on this builder")
            result.append(_validate(Buildpack(name=spec, path=path)))
        else:
            dest = fetch_dir / f"fetched-{i}"
            if kind == "tarball":
                await _fetch_tarball(spec, dest)
            else:
                await _fetch_git(spec, dest)
            result.append(_validate(Buildpack(name=spec, path=dest)))
    return result


async def _fetch_tarball(url: str, dest: Path) -> None:
    tgz = dest.with_suffix(".tgz")

    def download() -> None:
        with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT) as resp, open(tgz, "wb") as fh:
            total = 0
            while chunk := resp.read(1024 * 1024):
                total += len(chunk)
                if total > _MAX_BUILDPACK_BYTES:
                    raise BuildFailed(
                        f"buildpack {url} is larger than the limit of "
                        f"{archive.human_size(_MAX_BUILDPACK_BYTES)}"
                    )
                fh.write(chunk)

    try:
        await asyncio.to_thread(download)
        await asyncio.to_thread(
            archive.unpack, tgz, dest, max_bytes=_MAX_BUILDPACK_BYTES, what="buildpack tarball"
        )
    except (OSError, errors.InvalidArgument, errors.ResourceExhausted) as exc:
        raise BuildFailed(f"cannot fetch buildpack {url}: {exc}") from exc
    # A tarball often wraps everything in one top-level directory.
    entries = list(dest.iterdir())
    if not (dest / "bin").is_dir() and len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        for child in inner.iterdir():
            child.rename(dest / child.name)
        inner.rmdir()


async def _fetch_git(spec: str, dest: Path) -> None:
    url, _, ref = spec.partition("#")
    argv = ["git", "clone", "--quiet", "--depth", "1"]
    if ref:
        argv += ["--branch", ref]
    argv += ["--", url, str(dest)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    try:
        async with asyncio.timeout(_FETCH_TIMEOUT):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BuildFailed(f"cannot fetch buildpack {spec}: git clone timed out") from None
    if proc.returncode != 0:
        raise BuildFailed(f"cannot fetch buildpack {spec}: {err.decode(errors='replace').strip()}")
