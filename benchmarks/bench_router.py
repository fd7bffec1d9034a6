"""Router throughput, CPU and latency against nginx and HAProxy (a script, not a test).

One backend (nginx, 1 worker, a small fixed body and a 10 MB file) behind
these contenders, measured in interleaved rounds with the same wrk settings:

- slipway-router (its native data plane), 1 thread, router logs ON (a real
  nats-server) and its route in a real etcd, both started here;
- the same with 2 data plane threads (``router2``; on a 2-core machine it
  shares the cores with wrk and the backend, so read it as a trend);
- nginx as a reverse proxy, 1 worker, upstream keep-alive, access log off;
- HAProxy, 1 thread, http-reuse always.

Prints requests/s, p50/p99 latency and CPU per request of each (median over
rounds), the router/nginx and router/haproxy ratios, p99 with the offered
load paced at half nginx's max rate, a large-body run (10 MB answers
streamed through each proxy: MB/s and CPU per MB), and HTTPS against nginx
with the same certificate: keep-alive requests/s and new handshakes/s, and
HTTP/2 against HTTP/1.1 on the same HTTPS listeners (h2load for both, so the
difference is the protocol): requests/s and router CPU per request.

    .venv/bin/python benchmarks/bench_router.py [--rounds 3] [--duration 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slipway import engines, pki  # noqa: E402
from slipway.keys import Keys  # noqa: E402
from tests.harness import secure  # noqa: E402

BODY = "hello from the benchmark backend\n"
APP = "bench"
BASE = "bench.test"
PACED_CONNS = 100
BIG_MB = 10


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU of these processes and their children (nginx workers)."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def start(argv: list[str], log: Path, **kw: object) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )  # type: ignore[call-overload]


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def nginx_conf(tmp: Path, name: str, body: str) -> Path:
    d = tmp / name
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    {body}
}}
"""
    )
    return conf


def haproxy_conf(tmp: Path, port: int, backend: int) -> Path:
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        f"""
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
    option http-keep-alive
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{backend}
"""
    )
    return conf


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p99": lat["99"],
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def wrk(
    port: int,
    host: str,
    duration: float,
    connections: int = 50,
    script: Path | None = None,
    path: str = "/",
    scheme: str = "http",
    headers: tuple[str, ...] = (),
) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-H",
            f"Host: {host}",
            *(["-s", str(script)] if script else []),
            *[arg for h in headers for arg in ("-H", h)],
            f"{scheme}://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def h2load(
    port: int, host: str, duration: float, *, h1: bool, streams: int = 1, connections: int = 50
) -> float:
    """Requests/s over HTTPS with h2load: HTTP/1.1 (``h1``) or HTTP/2 with
    ``streams`` concurrent streams per connection."""
    out = subprocess.run(
        [
            "h2load",
            f"-c{connections}",
            "-t2",
            f"-m{streams}",
            f"-D{max(1, round(duration))}",
            "--warm-up-time=1",
            f"--connect-to=127.0.0.1:{port}",
            *(["--h1"] if h1 else []),
            f"https://{host}:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = re.search(r"(\d+) succeeded, (\d+) failed", out)
    if done is None or int(done.group(2)):
        codes = re.search(r"status codes: .*", out)
        print(f"  h2load: {done.group(0) if done else 'no result'}; {codes and codes.group(0)}")
    return float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]


async def write_route(endpoint: str, prefix: str, backend: int) -> None:
    keys = Keys(prefix)
    await secure.seal_async([endpoint], prefix)
    async with secure.root_etcd([endpoint]) as etcd:
        await etcd.put(
            keys.route_app(APP),
            json.dumps(
                {
                    "app": APP,
                    "web": 1,
                    "released": True,
                    "maintenance": False,
                    "crashed": False,
                    "balance": "random",
                }
            ).encode(),
        )
        await etcd.put(
            keys.route_dyno(APP, "web.1"),
            json.dumps(
                {
                    "app": APP,
                    "dyno": "web.1",
                    "address": f"127.0.0.1:{backend}",
                    "node": "n1",
                    "release": 1,
                }
            ).encode(),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument(
        "--logs-off",
        action="store_true",
        help="run the router without NATS logs (for comparison only; the target is logs on)",
    )
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "haproxy", "h2load"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            sys.exit(f"{tool} is not installed (make bench installs it)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    procs: list[subprocess.Popen[bytes]] = []
    etcd = nats = None
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp_s:
        tmp = Path(tmp_s)
        try:
            backend = engines.free_port()
            files = tmp / "files"
            files.mkdir()
            (files / "big.bin").write_bytes(os.urandom(BIG_MB << 20))
            # nginx's workers run as nobody: they must be able to read the file.
            for path in (tmp, files, files / "big.bin"):
                path.chmod(0o755)
            conf = nginx_conf(
                tmp,
                "backend",
                f"""
    server {{ listen 127.0.0.1:{backend}; keepalive_timeout 75s;
             location = /big.bin {{ root {files}; }}
             location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }} }}""",
            )
            procs.append(
                start([nginx, "-c", str(conf), "-e", str(tmp / "backend.err")], tmp / "backend.log")
            )
            engines.wait_for_port("127.0.0.1", backend, 10, procs[-1])

            # Sealed as in production: the router reads routes over TLS as `router`.
            etcd = secure.etcd_engine(tmp / "etcd")
            etcd.start()
            nats = secure.nats_engine(tmp / "nats")
            nats.start()
            prefix = "/bench"
            asyncio.run(write_route(f"127.0.0.1:{etcd.port}", prefix, backend))

            metrics_port = engines.free_port()
            # One certificate for every HTTPS listener (ECDSA P-256, from a CA made here).
            chain, key = pki.edge_certificate(pki.init_ca(tmp / "edge-ca"), [f"*.{BASE}"])
            (tmp / "edge.crt").write_bytes(chain)
            (tmp / "edge.key").write_bytes(key)
            (tmp / "edge.key").chmod(0o644)  # nginx's workers read it as nobody
            tls_ports: dict[str, int] = {}

            def router(threads: int, metrics: int | None = None) -> tuple[int, int]:
                port = engines.free_port()
                tls_port = engines.free_port()
                proc = start(
                    [
                        str(ROOT / ".venv/bin/slipway-router"),
                        "--workers",
                        str(threads),
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--listen-tls",
                        f"127.0.0.1:{tls_port}",
                        "--tls-cert",
                        str(tmp / "edge.crt"),
                        "--tls-key",
                        str(tmp / "edge.key"),
                        "--etcd",
                        f"127.0.0.1:{etcd.port}",
                        "--etcd-prefix",
                        prefix,
                        "--base-domain",
                        BASE,
                        "--nats",
                        "" if args.logs_off else f"nats://127.0.0.1:{nats.port}",
                        "--metrics-listen",
                        f"127.0.0.1:{metrics}" if metrics else "",
                        *secure.flags(pki.Role.ROUTER),
                        "--log-level",
                        "warning",
                    ],
                    tmp / f"router{threads}.log",
                )
                procs.append(proc)
                engines.wait_for_port("127.0.0.1", port, 15, proc)
                tls_ports[f"router{threads}"] = tls_port
                return port, proc.pid

            router_port, router_pid = router(1, metrics_port)
            router2_port, router2_pid = router(2)

            nginx_port = engines.free_port()
            tls_ports["nginx"] = engines.free_port()
            proxied = """location / { proxy_pass http://be; proxy_http_version 1.1;
                          proxy_set_header Connection ""; }"""
            conf = nginx_conf(
                tmp,
                "proxy",
                f"""
    upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}
    server {{ listen 127.0.0.1:{nginx_port}; {proxied} }}
    server {{ listen 127.0.0.1:{tls_ports["nginx"]} ssl http2;
             ssl_certificate {tmp / "edge.crt"}; ssl_certificate_key {tmp / "edge.key"};
             ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;
             ssl_session_cache shared:SSL:10m; {proxied} }}""",
            )
            procs.append(
                start([nginx, "-c", str(conf), "-e", str(tmp / "proxy.err")], tmp / "proxy.log")
            )
            engines.wait_for_port("127.0.0.1", nginx_port, 10, procs[-1])
            nginx_pid = procs[-1].pid

            ha_port = engines.free_port()
            procs.append(
                start(
                    [haproxy, "-f", str(haproxy_conf(tmp, ha_port, backend)), "-db"],
                    tmp / "haproxy.log",
                )
            )
            engines.wait_for_port("127.0.0.1", ha_port, 10, procs[-1])
            ha_pid = procs[-1].pid

            host = f"{APP}.{BASE}"
            contenders = {
                "router": router_port,
                "router2": router2_port,
                "nginx": nginx_port,
                "haproxy": ha_port,
            }
            # warm up every path (pools, caches) before measuring
            for port in contenders.values():
                wrk(port, host, 1.0)
            results: dict[str, list[dict[str, float]]] = {k: [] for k in contenders}
            pids_of = {
                "router": [router_pid],
                "router2": [router2_pid],
                "nginx": [nginx_pid],
                "haproxy": [ha_pid],
            }
            for rnd in range(args.rounds):
                for name, port in contenders.items():
                    pids = pids_of[name]
                    before = cpu_seconds(pids)
                    r = wrk(port, host, args.duration)
                    # CPU the proxy itself used (all its processes), in % of one core
                    r["cpu"] = 100 * (cpu_seconds(pids) - before) / args.duration
                    results[name].append(r)
                    print(
                        f"  round {rnd + 1} {name:8s} {r['rps']:9.0f} req/s  "
                        f"p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                        f"cpu {r['cpu']:4.0f}%  non-2xx {r['non2xx']:.0f}",
                        flush=True,
                    )
                    time.sleep(0.5)
            if any(r["rps"] == 0 for r in results["router"]):
                print((tmp / "router1.log").read_text()[-3000:])
            med = {
                k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p99", "cpu")}
                for k, v in results.items()
            }
            print()
            print(
                f"wrk 4 (-t2 -c50 -d{args.duration:g}s, keep-alive), median of "
                f"{args.rounds} interleaved rounds, 1 backend nginx worker"
            )
            print(
                f"{'contender':10s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'cpu %':>6s}"
                f" {'us cpu/req':>10s}"
            )
            for name, m in med.items():
                per_req = 1e6 * m["cpu"] / 100 / m["rps"] if m["rps"] else float("nan")
                print(
                    f"{name:10s} {m['rps']:10.0f} {m['p50']:8.2f} {m['p99']:8.2f} "
                    f"{m['cpu']:6.0f} {per_req:10.1f}"
                )
            r, n, h = med["router"], med["nginx"], med["haproxy"]
            print(f"router/nginx   throughput {r['rps'] / n['rps']:.2f}x  (target >= 0.90x)")
            print(f"router/haproxy throughput {r['rps'] / h['rps']:.2f}x  (target >= 1.00x)")
            cpu = {
                k: m["cpu"] / 100 / m["rps"] if m["rps"] else float("nan") for k, m in med.items()
            }
            print(
                f"router/nginx   CPU per request {cpu['router'] / cpu['nginx']:.2f}x  "
                "(target <= 1.20x)"
            )
            print(f"router 2 threads / 1 thread throughput {med['router2']['rps'] / r['rps']:.2f}x")
            print(
                f"p99 router - nginx at 50 connections (saturated): {r['p99'] - n['p99']:+.2f} ms"
            )
            # Half of nginx's max rate. wrk 4 has no -R (constant rate); instead
            # each of PACED_CONNS connections waits a fixed delay after every
            # response (wrk's Lua delay()), which offers about that rate as long
            # as latency stays well under the delay. Closed-loop pacing, so it
            # understates tail latency under overload (coordinated omission).
            levels = [
                ("half nginx's max rate", n["rps"] / 2),
                ("half the router's max rate", r["rps"] / 2),
            ]
            for label, target in levels:
                delay_ms = max(1, round(PACED_CONNS * 1000 / target))
                script = tmp / f"paced{delay_ms}.lua"
                script.write_text(f"function delay()\n  return {delay_ms}\nend\n")
                offered = PACED_CONNS * 1000 / delay_ms
                print(
                    f"paced at {label}: ~{offered:.0f} req/s offered "
                    f"({PACED_CONNS} connections, {delay_ms} ms between requests)"
                )
                paced = {}
                for name, port in contenders.items():
                    paced[name] = pr = wrk(port, host, args.duration, PACED_CONNS, script)
                    print(
                        f"  {name:8s} {pr['rps']:9.0f} req/s  p50 {pr['p50']:.2f} ms  "
                        f"p99 {pr['p99']:.2f} ms"
                    )
                gap = paced["router"]["p99"] - paced["nginx"]["p99"]
                print(f"  p99 router - nginx: {gap:+.2f} ms (target <= +1 ms)")
            # Large bodies: each request streams BIG_MB through the proxy.
            print(f"large bodies: {BIG_MB} MB answers, 4 connections, {args.duration} s")
            for name, port in contenders.items():
                pids = pids_of[name]
                before = cpu_seconds(pids)
                big = wrk(port, host, args.duration, 4, path="/big.bin")
                used = cpu_seconds(pids) - before
                mbps = big["rps"] * BIG_MB
                print(
                    f"  {name:8s} {mbps:8.0f} MB/s  p99 {big['p99']:.1f} ms  "
                    f"cpu {1000 * used / max(mbps * args.duration, 1e-9):.2f} ms per MB  "
                    f"non-2xx {big['non2xx']:.0f}"
                )
            # HTTPS, the same certificate on both: keep-alive requests, then a new
            # connection (a full handshake: wrk resumes no sessions) per request.
            print(f"HTTPS (ECDSA P-256 certificate, TLS 1.3), {args.duration} s each")
            https: dict[str, dict[str, float]] = {}
            for name, port in (("router", tls_ports["router1"]), ("nginx", tls_ports["nginx"])):
                pids = pids_of[name]
                before = cpu_seconds(pids)
                ka = wrk(port, host, args.duration, scheme="https")
                ka["cpu"] = (cpu_seconds(pids) - before) / args.duration
                before = cpu_seconds(pids)
                fresh = wrk(
                    port, host, args.duration, scheme="https", headers=("Connection: close",)
                )
                fresh["cpu"] = (cpu_seconds(pids) - before) / args.duration
                https[name] = {"ka": ka["rps"], "fresh": fresh["rps"]}
                print(
                    f"  {name:8s} keep-alive {ka['rps']:9.0f} req/s "
                    f"({1e6 * ka['cpu'] / max(ka['rps'], 1):.1f} us cpu/req)  "
                    f"new handshakes {fresh['rps']:7.0f}/s "
                    f"({1e6 * fresh['cpu'] / max(fresh['rps'], 1):.0f} us cpu each)  "
                    f"non-2xx {ka['non2xx'] + fresh['non2xx']:.0f}"
                )
            r_tls, n_tls = https["router"], https["nginx"]
            print(
                f"  router/nginx HTTPS keep-alive {r_tls['ka'] / n_tls['ka']:.2f}x, "
                f"handshakes {r_tls['fresh'] / n_tls['fresh']:.2f}x"
            )
            # HTTP/2 (ALPN h2) against HTTP/1.1 on the same listeners, one tool for both.
            # 50 requests in flight each time (the router's per-dyno limit): 50
            # connections of one stream, or 5 of 10 streams (h2x10).
            print(f"HTTP/2 vs HTTP/1.1 over TLS (h2load, 50 in flight, {args.duration} s each)")
            for name, port in (("router", tls_ports["router1"]), ("nginx", tls_ports["nginx"])):
                pids = pids_of[name]
                shown = []
                for label, h1, streams in (("h1", True, 1), ("h2", False, 1), ("h2x10", False, 10)):
                    before = cpu_seconds(pids)
                    rps = h2load(
                        port, host, args.duration, h1=h1, streams=streams,
                        connections=50 // streams,
                    )  # fmt: skip
                    cpu = (cpu_seconds(pids) - before) / (args.duration + 1)
                    shown.append(
                        f"{label} {rps:8.0f} req/s ({1e6 * cpu / max(rps, 1):5.1f} us cpu)"
                    )
                print(f"  {name:8s} " + "  ".join(shown))
            try:
                import urllib.request

                text = (
                    urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
                    .read()
                    .decode()
                )
                for line in text.splitlines():
                    if line.startswith(
                        ("slipway_router_logs_", "slipway_router_upstream_c", "slipway_router_req")
                    ):
                        print("  " + line)
            except OSError as exc:
                print(f"  (metrics unavailable: {exc})")
        finally:
            for proc in reversed(procs):
                stop(proc)
            for engine in (nats, etcd):
                if engine is not None:
                    engine.stop()


if __name__ == "__main__":
    main()
