"""Scale-out benchmark: `ps:scale web=0 -> 20` until all 20 dynos are up.

Runs a real etcd, nats-server, controller and two agents (runc containers) on
this machine, deploys the test slug, scales web from 0 to 20 and prints:
- the time from the scale call until ListDynos shows 20 web dynos up;
- the median and p90 container start time (the agent's runc invocation until
  the container's process is running), read from the agents' logs.
Run by `make bench`; prints figures, asserts nothing.
"""

from __future__ import annotations

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
    with tempfile.TemporaryDirectory(prefix="slipway-bench-scale-") as tmp:
        with standalone(Path(tmp)) as cluster:
            nats_url = cluster.controller.nats_url
            cluster.add_agent("node-a", memory_mb=16384)
            cluster.add_agent("node-b", memory_mb=16384)
            slug = asyncio.run(upload_slug(nats_url))
            with cluster.client() as client:
                client.create_app("bench")
                client.create_release(
                    "bench",
                    types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="host"),
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
                        return 1
                    time.sleep(0.05)
                elapsed = time.monotonic() - started
                client.scale("bench", [pb.FormationChange(type="web", quantity=0)])
            durations = []
            for agent in cluster.agents.values():
                for line in agent.log_path.read_text().splitlines():
                    if '"container started"' in line:
                        durations.append(json.loads(line)["duration_ms"])
            durations.sort()
            print(f"ps:scale web=0 -> {DYNOS}: all up in {elapsed:.2f} s (2 agents, 2 cores)")
            if durations:
                p90 = durations[int(0.9 * (len(durations) - 1))]
                print(
                    f"container start (runc invocation -> process running): "
                    f"median {statistics.median(durations):.0f} ms, p90 {p90:.0f} ms, "
                    f"n={len(durations)}"
                )
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
