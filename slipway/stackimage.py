"""Stack images: the versioned operating system under builds and dynos.

A stack (``slipway-24``) comes in two flavours, as Heroku's do: the **run**
image dynos run on (Debian minbase, the interpreters the built-in buildpacks
link against, and the shared libraries apps commonly load) and the **build**
image builds run on (the run image's packages plus compilers, headers, git,
npm, a JDK with Maven and Go). Each is made by debootstrap from a
:class:`Recipe` and kept under ``{stacks_dir}/{stack}-{flavour}-{digest}``,
where the digest is that of the recipe: a host builds an image once, and any
change to a recipe makes a new image beside the old one. A finished image has
``image.json`` (written last); a directory without it is a build that died
and is built again.

    slipway-stack build [--flavour run|build] [--stack NAME]   build what is missing
    slipway-stack show [--json]                                images, sizes, digests
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from slipway import errors
from slipway.oci.stack import SANDBOX_GID, SANDBOX_UID, SANDBOX_USER, HostStack, ImageStack, Stack

DEFAULT_STACK = "slipway-24"
DEFAULT_STACKS_DIR = Path("/var/lib/slipway/stacks")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
FLAVOURS = ("run", "build")
# Bumped when what :func:`_finish` does to an image changes.
_FINISH_VERSION = 1

# What dynos link against and run with: the interpreters of the built-in
# buildpacks, a Java runtime, TLS roots, time zones, a UTF-8 locale, and the
# libraries that Python wheels, npm modules and JVM apps commonly load.
_RUN_PACKAGES = (
    "ca-certificates",
    "tzdata",
    "locales",
    "netbase",
    "procps",
    "curl",
    "libpq5",
    "libssl3",
    "libxml2",
    "libxslt1.1",
    "libjpeg62-turbo",
    "libpng16-16",
    "zlib1g",
    "libsqlite3-0",
    "libffi8",
    "libyaml-0-2",
    "libcurl4",
    "python3",
    "python3-venv",
    "nodejs",
    "openjdk-17-jre-headless",
)
_BUILD_PACKAGES = (
    "build-essential",
    "pkg-config",
    "git",
    "unzip",
    "xz-utils",
    "file",
    "patch",
    "python3-dev",
    "python3-pip",
    "libpq-dev",
    "libssl-dev",
    "libxml2-dev",
    "libxslt1-dev",
    "libjpeg-dev",
    "libpng-dev",
    "zlib1g-dev",
    "libffi-dev",
    "libsqlite3-dev",
    "libyaml-dev",
    "libcurl4-openssl-dev",
    "openjdk-17-jdk-headless",
    "maven",
    "golang-go",
)


@dataclass(frozen=True)
class Recipe:
    """What one image is made of; its digest names the image."""

    stack: str
    flavour: str
    suite: str
    # Installed by debootstrap, whose resolver is simple (no virtual packages)...
    packages: tuple[str, ...]
    # ...then these by apt-get in the new tree, which resolves everything.
    extra: tuple[str, ...] = ()

    def digest(self) -> str:
        spec = {
            **asdict(self),
            "packages": sorted(self.packages),
            "extra": sorted(self.extra),
            "finish": _FINISH_VERSION,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    @property
    def image_name(self) -> str:
        return f"{self.stack}-{self.flavour}-{self.digest()[:16]}"


RECIPES: dict[tuple[str, str], Recipe] = {
    # npm too: a Node.js app's default web process is `npm start`; psql and
    # redis-cli because pg:psql and redis:cli run them in a one-off dyno
    # (debootstrap's resolver fails on postgresql-client, so apt-get installs it).
    (DEFAULT_STACK, "run"): Recipe(
        DEFAULT_STACK, "run", "bookworm", _RUN_PACKAGES, ("npm", "postgresql-client", "redis-tools")
    ),
    (DEFAULT_STACK, "build"): Recipe(
        DEFAULT_STACK,
        "build",
        "bookworm",
        _RUN_PACKAGES,
        ("npm", "postgresql-client", "redis-tools", *_BUILD_PACKAGES),
    ),
}


def recipe(stack: str, flavour: str) -> Recipe:
    found = RECIPES.get((stack, flavour))
    if found is None:
        known = sorted({s for s, _ in RECIPES})
        raise errors.InvalidArgument(
            f"unknown stack {stack!r} ({flavour}); this Slipway has {', '.join(known)}",
            reason="unknown_stack",
        )
    return found


def stacks_dir() -> Path:
    return Path(os.environ.get("SLIPWAY_STACKS_DIR") or DEFAULT_STACKS_DIR)


@dataclass(frozen=True)
class ImageInfo:
    """``image.json`` of a finished image."""

    name: str
    stack: str
    flavour: str
    digest: str
    built_at: float
    build_seconds: float
    size_bytes: int
    packages: int

    @classmethod
    def load(cls, path: Path) -> ImageInfo:
        obj = json.loads(path.read_text())
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__})


class ImageStore:
    """The images of one host, under :func:`stacks_dir`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or stacks_dir()

    def image_dir(self, wanted: Recipe) -> Path:
        return self.root / wanted.image_name

    def rootfs(self, wanted: Recipe) -> Path:
        return self.image_dir(wanted) / "rootfs"

    def info(self, wanted: Recipe) -> ImageInfo | None:
        marker = self.image_dir(wanted) / "image.json"
        if not marker.is_file():
            return None
        found = ImageInfo.load(marker)
        return found if found.digest == wanted.digest() else None

    def require(self, wanted: Recipe) -> Path:
        """The image's rootfs; Unavailable with the command that builds it when missing."""
        if self.info(wanted) is None:
            raise errors.Unavailable(
                f"stack image {wanted.image_name} is not built on this host (in {self.root}); "
                f"build it with `slipway-stack build --stack {wanted.stack} "
                f"--flavour {wanted.flavour}` (make setup does)",
                reason="stack_missing",
            )
        return self.rootfs(wanted)

    def ensure(
        self,
        wanted: Recipe,
        *,
        mirror: str = DEFAULT_MIRROR,
        progress: Callable[[str], None] = lambda _: None,
    ) -> ImageInfo:
        """Build the image unless it is there; one builder at a time per image."""
        found = self.info(wanted)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / f".{wanted.image_name}.lock"):
            found = self.info(wanted)
            if found is not None:  # another process built it while we waited
                return found
            return self._build(wanted, mirror, progress)

    def _build(self, wanted: Recipe, mirror: str, progress: Callable[[str], None]) -> ImageInfo:
        target = self.image_dir(wanted)
        work = self.root / f".{wanted.image_name}.building"
        for leftover in (work, target):
            if leftover.exists():
                shutil.rmtree(leftover)
        work.mkdir()
        rootfs = work / "rootfs"
        started = time.monotonic()
        progress(
            f"Building stack image {wanted.image_name} "
            f"({len(wanted.packages) + len(wanted.extra)} packages from {wanted.suite})"
        )
        argv = [
            _debootstrap(),
            "--variant=minbase",
            f"--include={','.join(wanted.packages)}",
            wanted.suite,
            str(rootfs),
            mirror,
        ]
        log_path = work / "debootstrap.log"
        with log_path.open("wb") as log_file:
            done = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise errors.Unavailable(
                f"debootstrap failed (exit {done.returncode}) building {wanted.image_name}:\n"
                + "\n".join(tail),
                reason="stack_build_failed",
            )
        if wanted.extra:
            progress(f"Installing {len(wanted.extra)} more packages with apt-get")
            _apt_install(rootfs, wanted.extra, work / "apt.log")
        progress("Finishing: sandbox user, locale, trimmed caches")
        _finish(rootfs)
        shutil.move(str(log_path), str(work / "build.log"))
        info = ImageInfo(
            name=wanted.image_name,
            stack=wanted.stack,
            flavour=wanted.flavour,
            digest=wanted.digest(),
            built_at=time.time(),
            build_seconds=round(time.monotonic() - started, 1),
            size_bytes=_tree_size(rootfs),
            packages=_package_count(rootfs),
        )
        (work / "image.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
        os.replace(work, target)
        progress(
            f"Built {wanted.image_name}: {info.size_bytes / 1e6:.0f} MB, "
            f"{info.packages} packages, {info.build_seconds:.0f} s"
        )
        return info

    def images(self) -> list[ImageInfo]:
        found = []
        for marker in sorted(self.root.glob("*/image.json")):
            with contextlib.suppress(OSError, KeyError, ValueError):
                found.append(ImageInfo.load(marker))
        return found


HOST_STACK = "host"


def open_stack(
    name: str,
    flavour: str,
    state_dir: Path,
    *,
    resolv_conf: bytes | None = None,
    store: ImageStore | None = None,
) -> Stack:
    """The stack a daemon runs its sandboxes on: ``host`` (the host's own /usr,
    for development) or a stack image of this host (Unavailable when not built)."""
    if name == HOST_STACK:
        return HostStack(state_dir, resolv_conf=resolv_conf)
    rootfs = (store or ImageStore()).require(recipe(name, flavour))
    return ImageStack(name, rootfs, state_dir, resolv_conf=resolv_conf)


def stack_names() -> list[str]:
    return sorted({s for s, _ in RECIPES} | {HOST_STACK})


def stack_option(flavour: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """``--stack NAME`` for a daemon whose sandboxes run on the ``flavour`` image."""
    use = "dynos run" if flavour == "run" else "builds run"
    return click.option(
        "--stack",
        "stack",
        type=click.Choice(stack_names()),
        default=DEFAULT_STACK,
        show_default=True,
        envvar="SLIPWAY_STACK",
        help=f"The stack {use} on: a stack image (its {flavour} flavour, built by "
        "`slipway-stack build`), or host, the host's own /usr (development only). "
        "Env: SLIPWAY_STACK.",
    )


def _debootstrap() -> str:
    for candidate in ("/usr/sbin/debootstrap", shutil.which("debootstrap")):
        if candidate and Path(candidate).exists():
            return candidate
    raise errors.Unavailable(
        "debootstrap is not installed: apt-get install debootstrap (make setup does)",
        reason="no_debootstrap",
    )


def _apt_install(rootfs: Path, packages: tuple[str, ...], log_path: Path) -> None:
    """apt-get install in the new tree, with /proc and the host's resolver lent to it
    and no service started."""
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    no_services = rootfs / "usr/sbin/policy-rc.d"
    no_services.write_text("#!/bin/sh\nexit 101\n")
    no_services.chmod(0o755)
    proc = rootfs / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
    }
    try:
        with log_path.open("wb") as log_file:
            for argv in (
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                ["apt-get", "clean"],
            ):
                done = subprocess.run(
                    ["chroot", str(rootfs), *argv],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    check=False,
                )
                if done.returncode != 0:
                    tail = log_path.read_text(errors="replace").splitlines()[-15:]
                    raise errors.Unavailable(
                        f"{' '.join(argv[:2])} failed (exit {done.returncode}) in the stack "
                        "image:\n" + "\n".join(tail),
                        reason="stack_build_failed",
                    )
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False)
        no_services.unlink(missing_ok=True)


def _finish(rootfs: Path) -> None:
    """Make a debootstrapped tree a stack: the sandbox user, mount points for the
    bundle, a UTF-8 locale, no package caches, and placeholders for the files
    each host binds in (resolv.conf, hosts)."""
    etc = rootfs / "etc"
    with (etc / "passwd").open("a") as passwd:
        passwd.write(f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:dyno:/app:/bin/bash\n")
    with (etc / "group").open("a") as group:
        group.write(f"{SANDBOX_USER}:x:{SANDBOX_GID}:\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("")
    (etc / "locale.gen").write_text("en_US.UTF-8 UTF-8\n")
    subprocess.run(
        ["chroot", str(rootfs), "/usr/sbin/locale-gen"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    (etc / "default" / "locale").write_text("LANG=en_US.UTF-8\n")
    for name in ("app", "tmp", "proc", "dev", "etc"):
        (rootfs / name).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        path = rootfs / junk
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir()


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _package_count(rootfs: Path) -> int:
    status = rootfs / "var/lib/dpkg/status"
    text = status.read_text(errors="replace") if status.is_file() else ""
    return text.count("Status: install ok installed")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@click.group(help="Stack images: the operating system builds and dynos run on.")
def main() -> None:
    pass


@main.command("build")
@click.option("--stack", "stack", default=DEFAULT_STACK, show_default=True)
@click.option(
    "--flavour",
    type=click.Choice([*FLAVOURS, "all"]),
    default="all",
    show_default=True,
    help="run: what dynos run on; build: what builds run on.",
)
@click.option("--mirror", default=DEFAULT_MIRROR, show_default=True, help="Debian mirror.")
@click.option(
    "--dir",
    "root",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Where images live. Env: SLIPWAY_STACKS_DIR (default {DEFAULT_STACKS_DIR}).",
)
@click.option("--quiet", is_flag=True, help="Say nothing when every image is built already.")
def build_command(stack: str, flavour: str, mirror: str, root: Path | None, quiet: bool) -> None:
    """Build the stack's images unless this host has them (by recipe digest)."""
    store = ImageStore(root)
    for name in FLAVOURS if flavour == "all" else (flavour,):
        try:
            wanted = recipe(stack, name)
            if store.info(wanted) is not None:
                if not quiet:
                    click.echo(f"-----> {wanted.image_name}: already built")
                continue
            store.ensure(wanted, mirror=mirror, progress=lambda m: click.echo(f"-----> {m}"))
        except errors.SlipwayError as exc:
            raise click.ClickException(exc.message) from None


@main.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@click.option("--dir", "root", type=click.Path(path_type=Path), default=None)
def show_command(as_json: bool, root: Path | None) -> None:
    """List this host's stack images, and whether each recipe's image is built."""
    store = ImageStore(root)
    built = {i.name: i for i in store.images()}
    rows: list[tuple[Recipe, ImageInfo | None]] = [
        (wanted, built.get(wanted.image_name)) for wanted in RECIPES.values()
    ]
    if as_json:
        listed = [
            {
                "stack": wanted.stack,
                "flavour": wanted.flavour,
                "image": wanted.image_name,
                "built": found is not None,
                "size_bytes": found.size_bytes if found else 0,
                "build_seconds": found.build_seconds if found else 0,
                "packages": found.packages if found else 0,
            }
            for wanted, found in rows
        ]
        click.echo(json.dumps(listed, indent=2))
        return
    for wanted, found in rows:
        state = (
            f"{found.size_bytes / 1e6:.0f} MB, {found.packages} packages"
            if found
            else "not built (slipway-stack build)"
        )
        click.echo(f"{wanted.stack:<12} {wanted.flavour:<6} {wanted.image_name:<34} {state}")


@main.command("prune")
@click.option("--dir", "root", type=click.Path(path_type=Path), default=None)
@click.option("--yes", is_flag=True, help="Do not ask.")
def prune_command(root: Path | None, yes: bool) -> None:
    """Delete this host's images that no recipe names any more (and failed builds).

    Sandboxes still running on such an image lose their root filesystem: restart
    the agents and builders on the new images first."""
    store = ImageStore(root)
    current = {wanted.image_name for wanted in RECIPES.values()}
    stale = [
        path
        for path in sorted(store.root.glob("*"))
        if path.is_dir() and (path.name.endswith(".building") or path.name not in current)
    ]
    if not stale:
        click.echo("Nothing to prune.")
        return
    for path in stale:
        click.echo(f"  {path.name}")
    if not yes:
        click.confirm(f"Delete these {len(stale)} image(s)?", abort=True)
    for path in stale:
        shutil.rmtree(path)
        name = path.name.lstrip(".").removesuffix(".building")
        path.with_name(f".{name}.lock").unlink(missing_ok=True)
    click.echo(f"Pruned {len(stale)} image(s).")
