"""OCI runtime bundles built in Python: a ContainerSpec in, a config.json out.

``build_config`` is pure (unit-tested field by field); ``write_bundle`` writes
it next to nothing else, because the rootfs comes from the stack and is
referenced by absolute path.

What every sandbox gets, and why:
- pid, mount, ipc and uts namespaces; the network namespace is the caller's
  to add (``{"type": "network", "path": ...}``, prepared with CNI by
  ``slipway.cni``); without one the sandbox shares the host's network;
- a non-root uid/gid, no capabilities, ``noNewPrivileges``;
- a read-only root from the stack, a writable tmpfs /tmp, a fresh /proc with
  the usual masked and read-only paths, a minimal tmpfs /dev;
- cgroup v1 memory limit with swap equal to it (no swapping), a pids limit,
  cpu shares, and rlimits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway.oci.stack import SANDBOX_GID, SANDBOX_UID, Mount, Stack

OCI_VERSION = "1.0.2"

_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that varies between two sandboxes."""

    hostname: str
    args: tuple[str, ...]
    env: dict[str, str]
    cgroups_path: str
    mounts: tuple[Mount, ...] = ()  # per-container mounts, e.g. /app
    cwd: str = "/app"
    uid: int = SANDBOX_UID
    gid: int = SANDBOX_GID
    memory_limit_bytes: int | None = None
    pids_limit: int | None = None
    cpu_shares: int | None = None
    tmp_size_bytes: int = 256 * 1024 * 1024
    nofile: int = 10_000
    readonly_root: bool = True
    annotations: dict[str, str] = field(default_factory=dict)


def app_overlay(lower: Path, upper: Path, work: Path, destination: str = "/app") -> Mount:
    """An overlay mounted by runc inside the container's own mount namespace.

    It lives and dies with the container: nothing to unmount on the host, and
    nothing to remount when an agent adopts a running container.
    """
    return Mount(
        destination,
        "overlay",
        "overlay",
        (f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}", "nosuid", "nodev"),
    )


def rw_bind(source: Path, destination: str) -> Mount:
    return Mount(destination, "bind", str(source), ("rbind", "rw", "nosuid", "nodev"))


def _base_mounts(spec: ContainerSpec) -> list[Mount]:
    return [
        Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"),
        ),
        Mount(
            "/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")
        ),
        Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        Mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            ("nosuid", "nodev", "mode=1777", f"size={spec.tmp_size_bytes}"),
        ),
    ]


def build_config(spec: ContainerSpec, stack: Stack) -> dict[str, Any]:
    """The config.json document for one container."""
    env = {"PATH": stack.path(), **spec.env}
    resources: dict[str, Any] = {
        # Deny all devices except the defaults runc always allows (null, zero, ...).
        "devices": [{"allow": False, "access": "rwm"}],
    }
    if spec.memory_limit_bytes is not None:
        # swap == limit means memory+swap may not exceed the limit: no swapping.
        resources["memory"] = {
            "limit": spec.memory_limit_bytes,
            "swap": spec.memory_limit_bytes,
        }
    if spec.pids_limit is not None:
        resources["pids"] = {"limit": spec.pids_limit}
    if spec.cpu_shares is not None:
        resources["cpu"] = {"shares": spec.cpu_shares}
    mounts = [m.to_oci() for m in (*stack.mounts(), *_base_mounts(spec), *spec.mounts)]
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": [spec.gid]},
            "args": list(spec.args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": [],
                "effective": [],
                "inheritable": [],
                "permitted": [],
                "ambient": [],
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": spec.nofile, "soft": spec.nofile},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": str(stack.rootfs()), "readonly": spec.readonly_root},
        "hostname": spec.hostname,
        "mounts": mounts,
        "annotations": dict(spec.annotations),
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "mount"},
                {"type": "ipc"},
                {"type": "uts"},
            ],
            "cgroupsPath": spec.cgroups_path,
            "resources": resources,
            "maskedPaths": list(_MASKED_PATHS),
            "readonlyPaths": list(_READONLY_PATHS),
        },
    }


def write_bundle(bundle_dir: Path, config: dict[str, Any]) -> Path:
    """Write config.json atomically; returns the bundle directory."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    tmp = bundle_dir / ".config.json.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, bundle_dir / "config.json")
    return bundle_dir
