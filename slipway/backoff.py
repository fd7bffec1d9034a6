"""Exponential backoff with full jitter, shared by every reconnecting loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    jitter: bool = True
    _attempt: int = field(default=0, init=False)

    def next(self) -> float:
        """Delay before the next attempt; grows until ``maximum``."""
        base = min(self.maximum, self.initial * (self.factor**self._attempt))
        self._attempt += 1
        if self.jitter:
            return random.uniform(base / 2, base)
        return base

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
