"""Scale-out benchmark: `ps:scale web=0 -> 20` until all 20 dynos are up.

Runs a real etcd, nats-server, controller and two agents (runc containers) on
this machine, deploys the test slug, scales web from 0 to 20 and prints:
- the time from the scale call until ListDynos shows 20 web dynos up;
- the median and p90 container start time (the agent's runc invocation until
  the container's process is running), read from the agents' logs.

By default it runs twice, once with each dyno its own network (``isolated``:
netns + CNI ADD before runc, the default) and once on the host's network
(``host``, the old way), and prints the figures side by side;
``--dyno-network isolated|host`` runs one of them.
Run by `make bench`; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slipway.v1 import platform_pb2 as pb
from slipway.v1 import types_pb2
from tests.harness.cluster import standalone
from tests.harness.slugs import upload_slug

DYNOS = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dyno-network", choices=["isolated", "host", "both"], default="both")
    modes = ["isolated", "host"] if (m := parser.parse_args().dyno_network) == "both" else [m]
    figures = {}
    for mode in modes:
        print(f"== dyno network: {mode}")
        result = run(mode)
        if result is None:
            return 1
        figures[mode] = result
    if len(figures) > 1:
        print("container start, median / p90 ms:")
        for mode, (median, p90, n) in figures.items():
            print(f"  {mode:9} {median:6.0f} / {p90:6.0f}  (n={n})")
    return 0


def run(mode: str) -> tuple[float, float, int] | None:
    with tempfile.TemporaryDirectory(prefix="slipway-bench-scale-") as tmp:
        with standalone(Path(tmp)) as cluster:
            nats_url = cluster.controller.nats_url
            for node in ("node-a", "node-b"):
                cluster.add_agent(node, memory_mb=16384, extra_args=("--dyno-network", mode))
            slug = asyncio.run(upload_slug(nats_url))
            with cluster.client() as client:
                client.create_app("bench")
                client.create_release(
                    "bench",
                    types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
                    {"web": slug.process_types["web"]},
                )
                client.scale("bench", [pb.FormationChange(type="web", quantity=0)])
                while len(client.list_nodes().nodes) < 2:
                    time.sleep(0.1)
                started = time.monotonic()
                client.scale("bench", [pb.FormationChange(type="web", quantity=DYNOS)])
                while True:
                    dynos = client.list_dynos("bench").dynos
                    if sum(1 for d in dynos if d.state == "up") == DYNOS:
                        break
                    if time.monotonic() - started > 300:
                        print("gave up after 300 s", file=sys.stderr)
                        return None
                    time.sleep(0.05)
                elapsed = time.monotonic() - started
                client.scale("bench", [pb.FormationChange(type="web", quantity=0)])
            durations, network = [], []
            for agent in cluster.agents.values():
                for line in agent.log_path.read_text().splitlines():
                    if '"container started"' in line:
                        durations.append(json.loads(line)["duration_ms"])
                        network.append(json.loads(line).get("network_ms", 0))
            durations.sort()
            print(f"ps:scale web=0 -> {DYNOS}: all up in {elapsed:.2f} s (2 agents, 2 cores)")
            if not durations:
                return 0.0, 0.0, 0
            p90 = durations[int(0.9 * (len(durations) - 1))]
            median = statistics.median(durations)
            print(
                f"container start ({mode} network: CNI ADD + runc invocation -> process "
                f"running): median {median:.0f} ms, p90 {p90:.0f} ms, n={len(durations)}; "
                f"of which network set-up and bundle median {statistics.median(network):.0f} ms"
            )
            return median, p90, len(durations)


if __name__ == "__main__":
    raise SystemExit(main())
