"""Cold and warm build times of the Python fixture (a script, not a test).

Starts its own etcd, nats-server (JetStream), `slipway-controller` and one
`slipway-builder` (runc sandbox on the host stack), then deploys
tests/fixtures/python-app through the typed API client exactly as
`slipway deploy` does: pack, upload, follow the output. Each figure runs from
the start of the upload to the moment the release exists (the build output
stream ends with the build naming its release).

- cold: the app's build cache purged first (pip downloads everything);
- warm: the same app again with a one-line source change (cache restored).

    .venv/bin/python benchmarks/bench_build.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slipway import archive, pki  # noqa: E402
from slipway.client import Client  # noqa: E402
from slipway.v1 import platform_pb2 as pb  # noqa: E402
from tests.harness import secure  # noqa: E402
from tests.harness.controller import ControllerProcess  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "python-app"


def deploy_seconds(client: Client, app: str, src: Path, tmp: Path) -> tuple[float, int]:
    """Pack (not timed), then upload -> release created (timed)."""
    packed = asyncio.run(archive.pack_source(src, tmp / "source.tgz"))
    started = time.monotonic()
    build = client.upload_source(app, packed.path, sha256=packed.digest).build
    final: pb.Build | None = None
    for event in client.stream_build_output(app, build.id):
        if event.WhichOneof("event") == "build":
            final = event.build
    elapsed = time.monotonic() - started
    if final is None or final.status != pb.BUILD_STATUS_SUCCEEDED or not final.release:
        raise SystemExit(f"build {build.id} did not release: {final}")
    return elapsed, final.release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="slipway-bench-build-") as tmp_name:
        tmp = Path(tmp_name)
        etcd = secure.etcd_engine(tmp / "etcd")
        nats = secure.nats_engine(tmp / "nats")
        etcd.start()
        nats.start()
        secure.seal([f"{etcd.host}:{etcd.port}"], "/bench")
        nats_url = f"nats://{nats.host}:{nats.port}"
        controller = ControllerProcess(
            f"{etcd.host}:{etcd.port}", "/bench", tmp / "controller", nats_url
        )
        builder: subprocess.Popen[bytes] | None = None
        try:
            controller.start()
            with open(tmp / "builder.log", "wb") as log:
                builder = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "builder",
                        "--nats",
                        nats_url,
                        "--data-dir",
                        str(tmp / "builder"),
                        "--name",
                        "bench-builder",
                        *secure.flags(pki.Role.BUILDER),
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            client = controller.client(timeout=30)
            client.create_app("bench-py")
            src = tmp / "python-app"
            shutil.copytree(FIXTURE, src)
            cold: list[float] = []
            warm: list[float] = []
            for n in range(1, args.rounds + 1):
                client.purge_build_cache("bench-py", "bench-py")
                (src / "server.py").write_text(
                    FIXTURE.joinpath("server.py").read_text() + f"\n# cold {n}\n"
                )
                seconds, version = deploy_seconds(client, "bench-py", src, tmp)
                cold.append(seconds)
                print(f"round {n}: cold {seconds:6.2f} s  (v{version})", flush=True)
                (src / "server.py").write_text(
                    FIXTURE.joinpath("server.py").read_text() + f"\n# warm {n}\n"
                )
                seconds, version = deploy_seconds(client, "bench-py", src, tmp)
                warm.append(seconds)
                print(f"round {n}: warm {seconds:6.2f} s  (v{version})", flush=True)
            print(
                f"python-app upload -> release created, median of {args.rounds}: "
                f"cold {statistics.median(cold):.2f} s, warm {statistics.median(warm):.2f} s"
            )
        finally:
            if builder is not None:
                builder.send_signal(signal.SIGTERM)
                try:
                    builder.wait(30)
                except subprocess.TimeoutExpired:
                    builder.kill()
                    builder.wait()
            controller.stop()
            nats.stop()
            etcd.stop()


if __name__ == "__main__":
    main()
