"""Stacks: the read-only operating-system layer under a container's /app.

A stack supplies the root filesystem a sandboxed program sees, minus the
per-container parts (/app, /tmp, /proc, /dev) that the bundle adds. The
``Stack`` protocol is what bundles depend on; ``HostStack`` is the first
implementation: it reuses the host's ``/usr`` (and the usrmerge links
``/bin``, ``/lib*``, ``/sbin`` pointing into it) and a generated ``/etc`` that
holds only what programs need, with a passwd entry for the sandbox user; it is
a development option. ``ImageStack`` is the default: a debootstrapped stack
image (slipway/stackimage.py) as the whole root, with nothing of the host's
but a copy of its resolver configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SANDBOX_UID = 64000
SANDBOX_GID = 64000
SANDBOX_USER = "dyno"
DEFAULT_PATH = "/app/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

# Directories that must exist in every rootfs as mount points for the bundle.
BUNDLE_MOUNTPOINTS = ("app", "tmp", "proc", "dev", "etc")

# /etc files a program commonly reads; everything else of the host's /etc
# (shadow, ssh keys, the agent's own config) stays out of the sandbox.
_ETC_FILES = (
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "ld.so.cache",
    "ld.so.conf",
    "localtime",
    "timezone",
    "mime.types",
    "protocols",
    "services",
    "networks",
    "os-release",
    "debian_version",
    "environment",
    "gai.conf",
    "inputrc",
    "bash.bashrc",
    "profile",
)
# /etc directories bound read-only on top of the generated /etc (symlink farms
# and certificate stores that are large or change with the host's packages).
_ETC_DIRS = ("alternatives", "ssl", "ca-certificates", "ld.so.conf.d", "profile.d", "python3")


@dataclass(frozen=True)
class Mount:
    """One OCI mount entry."""

    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict[str, object]:
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


def ro_bind(source: str | Path, destination: str) -> Mount:
    return Mount(destination, "bind", str(source), ("rbind", "ro", "nosuid", "nodev"))


class Stack(Protocol):
    """What a bundle needs from an operating-system layer."""

    name: str

    def prepare(self) -> None:
        """Build or check the rootfs; idempotent, called once per process start."""
        ...

    def rootfs(self) -> Path:
        """Directory used as the container root (mounted read-only)."""
        ...

    def mounts(self) -> list[Mount]:
        """Read-only mounts that complete the rootfs (may be empty)."""
        ...

    def path(self) -> str:
        """PATH for processes in the sandbox."""
        ...


class HostStack:
    """The host's own /usr and a trimmed, generated /etc, read-only."""

    name = "host"

    def __init__(
        self, state_dir: Path, *, host_root: Path = Path("/"), resolv_conf: bytes | None = None
    ) -> None:
        self._dir = state_dir / "stacks" / self.name
        self._host = host_root
        # Sandboxes in a network namespace of their own get this resolv.conf
        # (the host's may name a resolver on its loopback).
        self._resolv_conf = resolv_conf

    def rootfs(self) -> Path:
        return self._dir / "rootfs"

    def etc_dir(self) -> Path:
        return self._dir / "etc"

    def path(self) -> str:
        return DEFAULT_PATH

    def prepare(self) -> None:
        root = self.rootfs()
        root.mkdir(parents=True, exist_ok=True)
        for name in (*BUNDLE_MOUNTPOINTS, "usr"):
            (root / name).mkdir(exist_ok=True)
        # runc gives a tmpfs the mode of the directory it is mounted on.
        (root / "tmp").chmod(0o1777)
        # Mirror the host's usrmerge links (/bin -> usr/bin) as links in the
        # rootfs; real directories become read-only binds in mounts().
        for name in self._top_level_dirs():
            host = self._host / name
            target = root / name
            if host.is_symlink():
                link = os.readlink(host)
                if target.is_symlink() and os.readlink(target) == link:
                    continue
                if target.is_symlink():
                    target.unlink()
                elif target.exists():
                    target.rmdir()
                target.symlink_to(link)
            else:
                target.mkdir(exist_ok=True)
        self._write_etc()

    def _top_level_dirs(self) -> list[str]:
        names = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
        return [n for n in names if (self._host / n).exists() or (self._host / n).is_symlink()]

    def _write_etc(self) -> None:
        # Files are replaced one by one (never the directory): running
        # containers hold a bind of this directory and must keep seeing it.
        etc = self.etc_dir()
        etc.mkdir(parents=True, exist_ok=True)
        etc.chmod(0o755)
        host_etc = self._host / "etc"
        for name in _ETC_FILES:
            src = host_etc / name
            if src.is_file():
                _write_file(etc / name, src.read_bytes())
        for name in _ETC_DIRS:
            if (host_etc / name).is_dir():
                (etc / name).mkdir(exist_ok=True)
        _write_file(
            etc / "passwd",
            (
                "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:dyno:/app:/bin/sh\n"
            ).encode(),
        )
        _write_file(
            etc / "group",
            f"root:x:0:\nnogroup:x:65534:\n{SANDBOX_USER}:x:{SANDBOX_GID}:\n".encode(),
        )
        _write_file(etc / "hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
        if self._resolv_conf:
            _write_file(etc / "resolv.conf", self._resolv_conf)

    def mounts(self) -> list[Mount]:
        result = [ro_bind(self._host / "usr", "/usr")]
        for name in self._top_level_dirs():
            host = self._host / name
            if not host.is_symlink():
                result.append(ro_bind(host, f"/{name}"))
        result.append(ro_bind(self.etc_dir(), "/etc"))
        host_etc = self._host / "etc"
        for name in _ETC_DIRS:
            if (host_etc / name).is_dir():
                result.append(ro_bind(host_etc / name, f"/etc/{name}"))
        return result


# Where Debian hosts keep the CAs their operator added (update-ca-certificates).
LOCAL_CA_DIR = "usr/local/share/ca-certificates"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"


class ImageStack:
    """A stack image's rootfs, read-only. From the host come only its resolver
    configuration and the CAs its operator added (a TLS-inspecting egress proxy
    is common where builds fetch packages): the image's CA bundle plus
    those is bound over the image's."""

    def __init__(
        self,
        name: str,
        rootfs: Path,
        state_dir: Path,
        *,
        resolv_conf: bytes | None = None,
        host_root: Path = Path("/"),
    ) -> None:
        self.name = name
        self._rootfs = rootfs
        self._dir = state_dir / "stacks" / name
        self._resolv_conf = resolv_conf
        self._host = host_root

    def rootfs(self) -> Path:
        return self._rootfs

    def path(self) -> str:
        return DEFAULT_PATH

    def resolv_conf_file(self) -> Path:
        return self._dir / "resolv.conf"

    def prepare(self) -> None:
        missing = [n for n in BUNDLE_MOUNTPOINTS if not (self._rootfs / n).is_dir()]
        if missing or not (self._rootfs / "etc" / "resolv.conf").exists():
            raise FileNotFoundError(
                f"{self._rootfs} is not a stack image rootfs (missing {missing or 'resolv.conf'})"
            )
        self._dir.mkdir(parents=True, exist_ok=True)
        text = self._resolv_conf
        if text is None:
            host = self._host / "etc" / "resolv.conf"
            text = host.read_bytes() if host.is_file() else b""
        # Replaced, never rewritten in place: running containers keep their copy.
        _write_file(self.resolv_conf_file(), text)
        local = sorted((self._host / LOCAL_CA_DIR).glob("*.crt"))
        copies = self.local_ca_dir()
        copies.mkdir(exist_ok=True)
        for stale in set(copies.glob("*.crt")) - {copies / p.name for p in local}:
            stale.unlink()
        for path in local:
            _write_file(copies / path.name, path.read_bytes())
        if local:
            bundle = (self._rootfs / CA_BUNDLE).read_bytes()
            extra = b"".join(b"\n" + path.read_bytes().strip() + b"\n" for path in local)
            _write_file(self.ca_bundle_file(), bundle.rstrip() + b"\n" + extra)
        else:
            self.ca_bundle_file().unlink(missing_ok=True)

    def local_ca_dir(self) -> Path:
        """Copies of the operator's CAs, one file each (Java's keytool imports them)."""
        return self._dir / "local-ca"

    def ca_bundle_file(self) -> Path:
        return self._dir / "ca-certificates.crt"

    def mounts(self) -> list[Mount]:
        found = [ro_bind(self.resolv_conf_file(), "/etc/resolv.conf")]
        if self.ca_bundle_file().is_file():
            found.append(ro_bind(self.ca_bundle_file(), f"/{CA_BUNDLE}"))
            found.append(ro_bind(self.local_ca_dir(), f"/{LOCAL_CA_DIR}"))
        return found


def _write_file(path: Path, data: bytes) -> None:
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)
