"""Per-app HTTPS certificates from the cluster CA: what the leader makes,
renews and removes (the pure plan)."""

from __future__ import annotations

from controller.loops.edge_certs import RENEW_BEFORE, Held, plan

NOW = 1_800_000_000.0
DAY = 86400.0


def test_a_new_app_gets_a_certificate() -> None:
    todo = plan(["demo", "api"], {}, "localhost", NOW)
    assert todo.make == ["api.localhost", "demo.localhost"] and todo.remove == []


def test_renewed_in_the_last_30_days_only_when_made_here() -> None:
    held = {
        "demo.localhost": Held(NOW + RENEW_BEFORE - DAY, made_here=True),
        "api.localhost": Held(NOW + RENEW_BEFORE + DAY, made_here=True),
        "shop.localhost": Held(NOW + DAY, made_here=False),  # the operator's: left alone
    }
    todo = plan(["demo", "api", "shop"], held, "localhost", NOW)
    assert todo.make == ["demo.localhost"] and todo.remove == []


def test_a_destroyed_apps_certificate_goes_but_not_an_operators() -> None:
    held = {
        "gone.localhost": Held(NOW + 60 * DAY, made_here=True),
        "www.example.org": Held(NOW + 60 * DAY, made_here=False),
    }
    todo = plan([], held, "localhost", NOW)
    assert todo.remove == ["gone.localhost"] and todo.make == []
