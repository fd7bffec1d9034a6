"""Daily dyno cycling with a real controller, a real agent and runc, on a period of seconds.

The controller runs with ``dyno_cycle_hours`` of about 9 s: each formation dyno
is replaced, one at a time, the web dyno's replacement up before the old one
stops, and the app log says ``heroku[web.1]: Cycling``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.harness.cluster import LocalCluster
from tests.harness.wait import eventually
from tests.integration.test_cluster_dynos import deploy, dynos, http_get, routes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CYCLE_HOURS = 0.0025  # 9 s, plus up to 1.35 s of jitter


@pytest.fixture
def cycling(cluster: LocalCluster) -> LocalCluster:
    """The cluster's controller, restarted with a cycle period of seconds."""
    cluster.controller.stop()
    config = cluster.workdir / "controller.toml"  # the cluster fixture's config file
    config.write_text(config.read_text() + f"dyno_cycle_hours = {CYCLE_HOURS}\n")
    cluster.controller.start()
    return cluster


def test_dynos_are_cycled_one_at_a_time_without_dropping_web(cycling: LocalCluster) -> None:
    cluster = cycling
    cluster.add_agent("node-a")
    cli = cluster.controller.cli
    cli("apps:create", "cycle", check=True)
    deploy(cluster, "cycle")
    cli("ps:scale", "-a", "cycle", "web=1", "worker=1", check=True)
    shapes: list[Counter[str]] = []

    def steady() -> set[str]:
        """Instance ids when the formation is exactly web.1 and worker.1, both up."""
        current = dynos(cluster, "cycle")
        shapes.append(Counter(str(d["name"]) for d in current))
        names = sorted(str(d["name"]) for d in current)
        if names != ["web.1", "worker.1"] or any(d["state"] != "up" for d in current):
            return set()
        return {str(d["instance_id"]) for d in current}

    first = eventually(steady, 60)

    fewest_routes = [99]
    stop = threading.Event()

    def watch() -> None:
        """Once web.1 is routed, it must stay routed through every cycle."""
        while not stop.is_set():
            fewest_routes[0] = min(fewest_routes[0], len(routes(cluster, "cycle")))
            time.sleep(0.05)

    eventually(lambda: routes(cluster, "cycle"), 30)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        eventually(lambda: (ids := steady()) and not ids & first, 120, interval=0.5)
    finally:
        stop.set()
        watcher.join()

    # The formation never changed: no other names, at most a replacement beside a dyno.
    assert all(set(s) <= {"web.1", "worker.1"} and max(s.values(), default=0) <= 2 for s in shapes)
    assert fewest_routes[0] >= 1, "web.1 was never without a routed dyno"
    for route in routes(cluster, "cycle"):
        assert http_get(str(route["address"]))["dyno"] == "web.1"
    out = cli("logs", "-a", "cycle", "--source", "heroku", "-n", "1500", check=True).stdout
    assert "heroku[web.1]: Cycling" in out and "heroku[worker.1]: Cycling" in out
