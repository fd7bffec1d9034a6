"""Durations as people type them: ``90``, ``90s``, ``30m``, ``1h``, ``7d``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: str) -> int:
    """Seconds in ``value``; ValueError naming the accepted forms otherwise."""
    match = _DURATION.match(value.strip().lower())
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90s, 30m, 1h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]
