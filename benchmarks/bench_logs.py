"""Log latency: a line printed by a dyno until it shows in a running `slipway logs --tail`.

Runs a real etcd, nats-server, controller and agent (runc) on this machine and
a real `slipway logs --tail` process (through the controller's gRPC stream).
A dyno prints 1,000 lines, each carrying the wall-clock time it was printed
(every 5 ms); the benchmark stamps each line as it reads it from the CLI's
stdout and prints p50/p99/max of the difference. Same host, same clock.
Run by `make bench`; prints figures, asserts nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slipway.v1 import platform_pb2 as pb
from slipway.v1 import types_pb2
from tests.harness.cluster import LocalCluster, standalone
from tests.harness.controller import BIN
from tests.harness.slugs import upload_slug

LINES = 1000
PRINTER = (
    "python3 -u -c 'import time\n"
    f"for i in range({LINES}):\n"
    '    print("bench %d %.6f" % (i, time.time()), flush=True)\n'
    "    time.sleep(0.005)\n"
    "time.sleep(3600)'"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(cluster: LocalCluster) -> list[float]:
    controller = cluster.controller
    env = controller.env()
    env.update(SLIPWAY_API=controller.address, SLIPWAY_TOKEN=controller.token)
    tail = subprocess.Popen(
        [str(BIN / "slipway"), "logs", "-a", "bench", "--tail", "-n", "10"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )
    latencies: dict[int, float] = {}
    ready = threading.Event()

    def read() -> None:
        assert tail.stdout is not None
        for line in tail.stdout:
            arrived = time.time()
            _, _, message = line.rstrip("\n").partition("]: ")
            if message.startswith("Set BENCH"):
                ready.set()  # the tail is connected: its history came through
            parts = message.split()
            if len(parts) == 3 and parts[0] == "bench":
                latencies[int(parts[1])] = (arrived - float(parts[2])) * 1000
                if len(latencies) == LINES:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with cluster.client() as client:
            client.update_config("bench", {"BENCH": "1"})
            if not ready.wait(30):
                raise SystemExit("the tail reader did not connect within 30 s")
            client.scale("bench", [pb.FormationChange(type="printer", quantity=1)])
            reader.join(120)
            client.scale("bench", [pb.FormationChange(type="printer", quantity=0)])
    finally:
        tail.terminate()
        tail.wait(10)
    return [latencies[i] for i in sorted(latencies)]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="slipway-bench-logs-") as tmp:
        with standalone(Path(tmp)) as cluster:
            nats_url = cluster.controller.nats_url
            cluster.add_agent("node-a")
            slug = asyncio.run(upload_slug(nats_url))
            with cluster.client() as client:
                client.create_app("bench")
                client.create_release(
                    "bench",
                    types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
                    {"printer": PRINTER},
                )
                while not client.list_nodes().nodes:
                    time.sleep(0.1)
            latencies = measure(cluster)
            if not latencies:
                print("no lines arrived", file=sys.stderr)
                return 1
            print(
                f"log latency, dyno print -> `logs --tail` output ({len(latencies)}/{LINES} "
                f"lines, one every 5 ms): p50 {statistics.median(latencies):.1f} ms, "
                f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
            )
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
