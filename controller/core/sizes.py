"""Dyno sizes: one table, named like Heroku's, that operators extend in config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slipway import errors

DEFAULT_SIZE = "standard-1x"


@dataclass(frozen=True)
class DynoSize:
    name: str
    memory_mb: int
    max_processes: int
    cpu_shares: int


BUILTIN_SIZES: tuple[DynoSize, ...] = (
    DynoSize("standard-1x", 512, 256, 1024),
    DynoSize("standard-2x", 1024, 512, 2048),
    DynoSize("performance-m", 2560, 16384, 4096),
    DynoSize("performance-l", 14336, 32768, 8192),
)


class SizeTable:
    def __init__(self, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._sizes = {s.name: s for s in BUILTIN_SIZES}
        for name, spec in (extra or {}).items():
            try:
                memory = int(spec["memory_mb"])
            except (KeyError, TypeError, ValueError) as exc:
                raise errors.InvalidArgument(f"size {name!r} needs an integer memory_mb") from exc
            self._sizes[name.lower()] = DynoSize(
                name.lower(),
                memory,
                int(spec.get("max_processes", 256)),
                int(spec.get("cpu_shares", 1024)),
            )

    def get(self, name: str) -> DynoSize:
        size = self._sizes.get(name.lower())
        if size is None:
            raise errors.InvalidArgument(
                f"unknown dyno size {name!r}; sizes: {', '.join(self.names())}",
                reason="invalid_size",
            )
        return size

    def names(self) -> list[str]:
        return [s.name for s in self.all()]

    def all(self) -> list[DynoSize]:
        return sorted(self._sizes.values(), key=lambda s: (s.memory_mb, s.name))
