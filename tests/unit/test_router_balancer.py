"""Dyno choice: admission codes, random spread, quarantine, limits, backlog, p2c."""

from __future__ import annotations

import random
from collections import Counter

from router import errors_page as pages
from router.balancer import Balancer
from router.config import Limits
from router.table import AppRoute, DynoRoute


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def dynos(n: int, app: str = "demo") -> tuple[DynoRoute, ...]:
    return tuple(DynoRoute(app, f"web.{i + 1}", "10.0.0.1", 5000 + i) for i in range(n))


def balancer(**limits: float | int) -> tuple[Balancer, Clock]:
    clock = Clock()
    return Balancer(Limits(**limits), clock=clock, rng=random.Random(7)), clock  # type: ignore[arg-type]


APP = AppRoute("demo", web=3, released=True)


def test_admission_order() -> None:
    two = dynos(2)
    assert Balancer.admission(AppRoute("a", released=True, maintenance=True), two) is pages.H80
    assert Balancer.admission(AppRoute("a", released=False, maintenance=True), ()) is pages.H80
    assert Balancer.admission(AppRoute("a", released=False), two) is pages.H81
    assert Balancer.admission(AppRoute("a", released=True, crashed=True), two) is pages.H10
    assert Balancer.admission(AppRoute("a", web=0, released=True), ()) is pages.H14
    # web > 0 but nothing up yet: admitted, and the exchange holds it for the boot (H20 later)
    assert Balancer.admission(AppRoute("a", web=2, released=True), ()) is None
    assert Balancer.admission(AppRoute("a", web=2, released=True), two) is None


def test_random_choice_spreads_over_all_dynos() -> None:
    b, _ = balancer()
    three = dynos(3)
    seen = Counter(b.choose(APP, three).name for _ in range(3000))  # type: ignore[union-attr]
    assert set(seen) == {"web.1", "web.2", "web.3"}
    assert min(seen.values()) > 800


def test_quarantine_skips_the_dyno_until_it_expires() -> None:
    b, clock = balancer(quarantine=5.0)
    two = dynos(2)
    b.quarantine(two[0].address)
    assert b.quarantines_total == 1
    assert {b.choose(APP, two) for _ in range(50)} == {two[1]}
    clock.now += 5.1
    assert not b.is_quarantined(two[0].address)
    assert {b.choose(APP, two) for _ in range(200)} == set(two)


def test_tried_dynos_are_not_retried_and_all_gone_is_h99() -> None:
    b, _ = balancer()
    two = dynos(2)
    assert b.choose(APP, two, {two[0].address}) == two[1]
    assert b.choose(APP, two, {two[0].address, two[1].address}) is pages.H99
    b.quarantine(two[0].address)
    b.quarantine(two[1].address)
    assert b.choose(APP, two) is pages.H99


def test_inflight_limit_then_backlog_then_h11() -> None:
    b, _ = balancer(max_inflight_per_dyno=2, backlog_per_dyno=1)
    one = dynos(1)
    for _ in range(2):
        chosen = b.choose(APP, one)
        assert chosen == one[0]
        b.start(one[0])
    assert b.choose(APP, one) is None  # full: wait in the backlog
    woken: list[str] = []
    b.wait("demo", lambda: woken.append("first"))
    assert b.choose(APP, one) is pages.H11  # backlog of 1 x 1 dyno is full
    b.finish(one[0])
    assert woken == ["first"]
    assert b.inflight[one[0].address] == 1
    assert b.backlog_depth("demo") == 0


def test_cancelled_waiter_leaves_the_backlog() -> None:
    b, _ = balancer()

    def waiter() -> None:
        raise AssertionError("must not be called")

    b.wait("demo", waiter)
    b.cancel_wait("demo", waiter)
    assert b.backlog_depth("demo") == 0
    b.start(dynos(1)[0])
    b.finish(dynos(1)[0])


def test_least_loaded_prefers_the_idle_dyno() -> None:
    b, _ = balancer()
    app = AppRoute("demo", web=2, released=True, balance="least-loaded")
    busy, idle = dynos(2)
    for _ in range(10):
        b.start(busy)
    assert {b.choose(app, (busy, idle)) for _ in range(100)} == {idle}


def test_least_loaded_with_many_dynos_avoids_the_busiest() -> None:
    b, _ = balancer()
    app = AppRoute("demo", web=5, released=True, balance="least-loaded")
    five = dynos(5)
    for _ in range(20):
        b.start(five[0])
    picks = Counter(b.choose(app, five) for _ in range(1000))
    assert five[0] not in picks  # it always loses its pairing
