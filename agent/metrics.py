"""Host figures from psutil and per-dyno memory from the cgroup v1 hierarchy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil


@dataclass(frozen=True)
class HostMetrics:
    cpu_percent: float
    memory_total: int
    memory_used: int
    disk_total: int
    disk_used: int
    load1: float
    load5: float
    load15: float


def host_metrics(data_dir: Path) -> HostMetrics:
    """Cheap enough to call every heartbeat (cpu_percent is non-blocking)."""
    vm = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(str(data_dir))
        disk_total, disk_used = int(disk.total), int(disk.used)
    except OSError:
        disk_total = disk_used = 0
    load1, load5, load15 = os.getloadavg()
    return HostMetrics(
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        memory_total=int(vm.total),
        memory_used=int(vm.total - vm.available),
        disk_total=disk_total,
        disk_used=disk_used,
        load1=load1,
        load5=load5,
        load15=load15,
    )


@cache
def cgroup_root(controller: str) -> Path | None:
    """Where a v1 controller is mounted (/sys/fs/cgroup/memory, .../cpu,cpuacct), if it is."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if " - cgroup " in line and controller in fields[-1].split(","):
                    return Path(fields[4])
    except OSError:
        pass
    return None


def memory_cgroup_root() -> Path:
    """Where the v1 memory controller is mounted (usually /sys/fs/cgroup/memory)."""
    return cgroup_root("memory") or Path("/sys/fs/cgroup/memory")


def _read_stat(path: Path) -> dict[str, int]:
    result: dict[str, int] = {}
    with open(path) as fh:
        for line in fh:
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                result[key] = int(value)
    return result


def dyno_memory(cgroups_path: str) -> int | None:
    """Memory a dyno uses, Heroku-style: resident memory plus swap, no page cache.

    None when the cgroup is gone (the container stopped).
    """
    base = memory_cgroup_root() / cgroups_path.lstrip("/")
    try:
        stat = _read_stat(base / "memory.stat")
    except OSError:
        return None
    rss = stat.get("total_rss", stat.get("rss", 0))
    swap = stat.get("total_swap", stat.get("swap", 0))
    return rss + swap


def oom_kills(cgroups_path: str) -> int:
    """How often the kernel OOM killer fired in this cgroup (0 when unknown)."""
    base = memory_cgroup_root() / cgroups_path.lstrip("/")
    try:
        with open(base / "memory.oom_control") as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0
