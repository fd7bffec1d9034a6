"""Failed logins slow down guessing, per account and per source address.

After ``free`` failures in a row a key (an email, or an address: one
throttle each) must wait before its next try: ``base`` seconds, doubling with
each further failure up to ``cap``. A success clears the account's count; the
caller leaves the address's alone, as one right password must not excuse an
address guessing at many accounts. Time is injected; the counts live in the
controller's memory, so each controller throttles on its own and a restart
forgets them.
"""

from __future__ import annotations

from dataclasses import dataclass

from slipway.clock import Clock


@dataclass
class _Failures:
    count: int = 0
    until: float = 0.0  # monotonic time before which tries are refused


class LoginThrottle:
    def __init__(
        self,
        clock: Clock,
        *,
        free: int = 5,
        base: float = 1.0,
        cap: float = 30.0,
        max_keys: int = 100_000,
    ) -> None:
        self.clock = clock
        self.free = free
        self.base = base
        self.cap = cap
        self.max_keys = max_keys
        self._failures: dict[str, _Failures] = {}

    def wait(self, *keys: str) -> float:
        """Seconds until ``keys`` may try again (0: now)."""
        now = self.clock.monotonic()
        waits = [f.until - now for k in keys if (f := self._failures.get(k)) is not None]
        return max([0.0, *waits])

    def failed(self, *keys: str) -> None:
        now = self.clock.monotonic()
        if len(self._failures) >= self.max_keys:
            # Forget the ones no longer waiting, so a flood of addresses cannot grow this.
            self._failures = {k: f for k, f in self._failures.items() if f.until > now}
        for key in keys:
            failures = self._failures.setdefault(key, _Failures())
            failures.count += 1
            over = failures.count - self.free
            if over > 0:
                failures.until = now + min(self.cap, self.base * 2 ** (over - 1))

    def succeeded(self, account: str) -> None:
        self._failures.pop(account, None)
