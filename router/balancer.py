"""Choosing a dyno: random (Heroku) or least-loaded, with this router's own
quarantine list, in-flight limits and app backlog.

Everything here is per router: routers never coordinate, so a dyno one router
quarantined is still tried by the others (that is the point: a network
problem between one router and one dyno must not take the dyno out for all).

Decision order for a request to a known app:
    maintenance -> H80; nothing released -> H81; crashed -> H10;
    no web dynos wanted (web=0) -> H14; web > 0 but none is up yet (booting):
    the exchange holds the request until one is, up to ``boot_timeout``, then
    H20 (as Heroku's router does during a boot);
    every dyno quarantined or already tried -> H99;
    every usable dyno at its in-flight limit -> wait in the app backlog, or
    H11 at once if the backlog already holds backlog_per_dyno x dynos.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence

from router import errors_page as pages
from router.config import Limits
from router.errors_page import RouterError
from router.table import BALANCE_LEAST_LOADED, AppRoute, DynoRoute

Waiter = Callable[[], None]


class Balancer:
    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.rng = rng or random.Random()
        self.inflight: dict[str, int] = {}  # dyno address -> requests in flight
        self.quarantined: dict[str, float] = {}  # dyno address -> until (clock)
        self.backlog: dict[str, deque[Waiter]] = {}  # app -> waiting requests
        self.quarantines_total = 0

    # -- admission ----------------------------------------------------------
    @staticmethod
    def admission(app: AppRoute, dynos: Sequence[DynoRoute]) -> RouterError | None:
        if app.maintenance:
            return pages.H80
        if not app.released:
            return pages.H81
        if app.crashed:
            return pages.H10
        if not dynos and app.web <= 0:
            return pages.H14
        return None  # no dyno while web > 0: booting, the exchange holds the request

    # -- choosing -----------------------------------------------------------
    def is_quarantined(self, address: str) -> bool:
        until = self.quarantined.get(address)
        if until is None:
            return False
        if until > self.clock():
            return True
        del self.quarantined[address]
        return False

    def quarantine(self, address: str) -> None:
        self.quarantined[address] = self.clock() + self.limits.quarantine
        self.quarantines_total += 1

    def choose(
        self,
        app: AppRoute,
        dynos: Sequence[DynoRoute],
        tried: frozenset[str] | set[str] = frozenset(),
    ) -> DynoRoute | RouterError | None:
        """A dyno to try, an error to answer with, or None: wait in the backlog."""
        limit = self.limits.max_inflight_per_dyno
        inflight = self.inflight
        if app.balance != BALANCE_LEAST_LOADED and not tried and not self.quarantined:
            # Fast path: nothing quarantined, first attempt; one random pick is
            # usually enough.
            dyno = dynos[self.rng.randrange(len(dynos))] if len(dynos) > 1 else dynos[0]
            if inflight.get(dyno.address, 0) < limit:
                return dyno
        usable = [d for d in dynos if d.address not in tried and not self.is_quarantined(d.address)]
        if not usable:
            return pages.H99
        free = [d for d in usable if inflight.get(d.address, 0) < limit]
        if not free:
            return None if self.backlog_room(app.name, len(dynos)) else pages.H11
        if len(free) == 1:
            return free[0]
        if app.balance == BALANCE_LEAST_LOADED:
            # Power of two choices: two random dynos, the less busy one wins.
            a, b = self.rng.sample(free, 2)
            return a if inflight.get(a.address, 0) <= inflight.get(b.address, 0) else b
        return free[self.rng.randrange(len(free))]

    # -- in-flight accounting -----------------------------------------------
    def start(self, dyno: DynoRoute) -> None:
        address = dyno.address
        self.inflight[address] = self.inflight.get(address, 0) + 1

    def finish(self, dyno: DynoRoute) -> None:
        address = dyno.address
        left = self.inflight.get(address, 1) - 1
        if left > 0:
            self.inflight[address] = left
        else:
            self.inflight.pop(address, None)
        waiting = self.backlog.get(dyno.app)
        if waiting:
            waiting.popleft()()

    # -- backlog ------------------------------------------------------------
    def backlog_room(self, app: str, dynos: int) -> bool:
        waiting = self.backlog.get(app)
        return not waiting or len(waiting) < self.limits.backlog_per_dyno * dynos

    def wait(self, app: str, waiter: Waiter, *, front: bool = False) -> None:
        """Queue ``waiter``; it is called once when a dyno of ``app`` frees a slot."""
        queue = self.backlog.setdefault(app, deque())
        if front:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)

    def cancel_wait(self, app: str, waiter: Waiter) -> None:
        queue = self.backlog.get(app)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            pass
        if not queue:
            del self.backlog[app]

    def backlog_depth(self, app: str) -> int:
        return len(self.backlog.get(app, ()))
