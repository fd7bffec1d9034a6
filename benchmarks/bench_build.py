"""Cold and warm build times of every sample app (a script, not a test).

Starts its own etcd, nats-server (JetStream), `slipway-controller` and one
`slipway-builder` (runc sandbox on the slipway-24 build image), then deploys
each sample through the typed API client exactly as `slipway deploy` does:
pack, upload, follow the output. Each figure runs from the start of the upload
to the moment the release exists (the build output stream ends with the build
naming its release).

- cold: the app's build cache purged first (everything is downloaded again:
  wheels, npm packages, Go modules and toolchain, Maven's repository);
- warm: the same app again with a changed source file (cache restored).

The issue's target: a warm Python build under half its cold time.

    .venv/bin/python benchmarks/bench_build.py [--rounds 1] [--only NAME ...]
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

SAMPLES = {
    "python-app": ROOT / "tests" / "fixtures" / "python-app",
    "django-whitenoise": ROOT / "examples" / "django-whitenoise",
    "flask-poetry": ROOT / "examples" / "flask-poetry",
    "fastapi-uv": ROOT / "examples" / "fastapi-uv",
    "node": ROOT / "examples" / "node",
    "express-yarn": ROOT / "examples" / "express-yarn",
    "express-pnpm": ROOT / "examples" / "express-pnpm",
    "express-yarn-berry": ROOT / "examples" / "express-yarn-berry",
    "go-web": ROOT / "examples" / "go-web",
    "java-maven": ROOT / "examples" / "java-maven",
}


def deploy_seconds(
    client: Client, app: str, src: Path, tmp: Path, *, trace: bool = False
) -> tuple[float, int]:
    """Pack (not timed), then upload -> release created (timed). ``trace``
    prints the build output with the seconds since the upload."""
    packed = asyncio.run(archive.pack_source(src, tmp / "source.tgz"))
    started = time.monotonic()
    build = client.upload_source(app, packed.path, sha256=packed.digest).build
    final: pb.Build | None = None
    for event in client.stream_build_output(app, build.id):
        if event.WhichOneof("event") == "build":
            final = event.build
        elif trace:
            print(f"    {time.monotonic() - started:7.2f}  {event.line.line}", flush=True)
    elapsed = time.monotonic() - started
    if final is None or final.status != pb.BUILD_STATUS_SUCCEEDED or not final.release:
        raise SystemExit(f"build {build.id} did not release: {final}")
    return elapsed, final.release


def bench_sample(
    client: Client, name: str, sample: Path, tmp: Path, rounds: int, *, trace: bool = False
) -> tuple[float, float]:
    """Median cold and warm seconds of ``rounds`` rounds of one sample."""
    app = f"bench-{name}"[:30]
    client.create_app(app)
    src = tmp / name
    shutil.copytree(sample, src)
    procfile = src / "Procfile"
    if procfile.is_file():
        # Builds only: this cluster has no agent to run a release phase on.
        lines = procfile.read_text().splitlines(keepends=True)
        procfile.write_text("".join(x for x in lines if not x.startswith("release:")))
    cold: list[float] = []
    warm: list[float] = []
    for n in range(1, rounds + 1):
        client.purge_build_cache(app, app)
        (src / ".bench-round").write_text(f"cold {n}\n")
        seconds, version = deploy_seconds(client, app, src, tmp, trace=trace)
        cold.append(seconds)
        print(f"{name} round {n}: cold {seconds:6.2f} s  (v{version})", flush=True)
        (src / ".bench-round").write_text(f"warm {n}\n")
        seconds, version = deploy_seconds(client, app, src, tmp, trace=trace)
        warm.append(seconds)
        print(f"{name} round {n}: warm {seconds:6.2f} s  (v{version})", flush=True)
    return statistics.median(cold), statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=list(SAMPLES), help="Some samples only.")
    parser.add_argument("--trace", action="store_true", help="Print the build output with times.")
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
            results: list[tuple[str, float, float]] = []
            for name in args.only or list(SAMPLES):
                cold, warm = bench_sample(
                    client, name, SAMPLES[name], tmp, args.rounds, trace=args.trace
                )
                results.append((name, cold, warm))
            print(f"\nupload -> release created, median of {args.rounds} round(s):")
            print(f"{'sample':<20} {'cold s':>8} {'warm s':>8} {'warm/cold':>10}")
            for name, cold, warm in results:
                print(f"{name:<20} {cold:8.2f} {warm:8.2f} {warm / cold:10.2f}")
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
