"""Test slugs built in Python, stored in the NATS object store like a builder would.

The default slug runs on the stack's python3 (the run image has Python 3.11):

    web:      python3 server.py      HTTP on $PORT; GET / answers JSON with DYNO,
                                     GREETING (a config var), PROFILE_D (set by
                                     .profile.d/greet.sh), uid, pid, hostname;
                                     /pids lists visible pids; /write?path=P tries
                                     to write P; /alloc?mb=N holds N MB; /exit?code=N
    worker:   python3 worker.py      prints "tick N" every 0.2 s
    crash:    python3 crash.py       prints a line and exits with status 3
    stubborn: python3 server.py --ignore-term   like web, but ignores SIGTERM
    hog:      python3 hog.py         allocates MEGS (default 400) MB and waits

Usage::

    slug = await upload_slug(nats_url)
    spec = DynoSpec(..., slug_digest=slug.digest, command=slug.process_types["web"])
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from typing import NamedTuple

SERVER = r"""
import json, os, signal, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
HELD = []


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, obj):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/pids":
            return self._send(200, sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        if url.path == "/write":
            try:
                with open(q["path"], "w") as fh:
                    fh.write("x")
                return self._send(200, {"written": True})
            except OSError as exc:
                return self._send(200, {"written": False, "error": str(exc)})
        if url.path == "/read":
            try:
                with open(q["path"]) as fh:
                    return self._send(200, {"content": fh.read()})
            except OSError as exc:
                return self._send(200, {"content": None, "error": str(exc)})
        if url.path == "/alloc":
            HELD.append(bytearray(int(q.get("mb", "10")) * 1024 * 1024))
            for chunk in HELD:
                for i in range(0, len(chunk), 4096):
                    chunk[i] = 1
            return self._send(200, {"held_mb": sum(len(c) for c in HELD) // (1024 * 1024)})
        if url.path == "/exit":
            self._send(200, {"exiting": True})
            os._exit(int(q.get("code", "1")))
        self._send(200, {
            "dyno": os.environ.get("DYNO"),
            "port": os.environ.get("PORT"),
            "greeting": os.environ.get("GREETING"),
            "profile_d": os.environ.get("PROFILE_D"),
            "home": os.environ.get("HOME"),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
        })

    def log_message(self, fmt, *args):
        print("request " + (fmt % args), flush=True)


server = ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler)
print(f"listening on {os.environ['PORT']} as {os.environ.get('DYNO')}", flush=True)
server.serve_forever()
"""

WORKER = r"""
import os, time
n = 0
while True:
    print(f"tick {n} {os.environ.get('DYNO')}", flush=True)
    n += 1
    time.sleep(0.2)
"""

CRASH = r"""
import sys
print("about to crash", flush=True)
sys.exit(3)
"""

HOG = r"""
import os, time
megs = int(os.environ.get("MEGS", "400"))
print(f"allocating {megs} MB", flush=True)
held = []
for _ in range(megs):
    block = bytearray(1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    held.append(block)
print("allocated", flush=True)
time.sleep(3600)
"""

PROFILE_D = 'export PROFILE_D="sourced-${DYNO}"\n'

PROCESS_TYPES = {
    "web": "python3 server.py",
    "worker": "python3 worker.py",
    "crash": "python3 crash.py",
    "stubborn": "python3 server.py --ignore-term",
    "hog": "python3 hog.py",
}


class Slug(NamedTuple):
    digest: str
    size: int
    process_types: dict[str, str]
    data: bytes


def build_slug(
    extra_files: dict[str, str | bytes] | None = None,
    *,
    process_types: dict[str, str] | None = None,
    app_prefix: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """A deterministic slug tar.gz (fixed mtimes) and its process types."""
    types = dict(process_types or PROCESS_TYPES)
    files: dict[str, str | bytes] = {
        "Procfile": "".join(f"{k}: {v}\n" for k, v in types.items()),
        "server.py": SERVER,
        "worker.py": WORKER,
        "crash.py": CRASH,
        "hog.py": HOG,
        ".profile.d/greet.sh": PROFILE_D,
        **(extra_files or {}),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parts = [n.split("/") for n in files]
        dirs = sorted({"/".join(p[:i]) for p in parts for i in range(1, len(p))})
        prefix = "./app/" if app_prefix else "./"
        for d in dirs:
            info = tarfile.TarInfo(prefix + d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(prefix + name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    blob = gzip.compress(raw.getvalue(), mtime=0)
    return blob, types


async def upload_slug(
    nats_url: str,
    extra_files: dict[str, str | bytes] | None = None,
    *,
    process_types: dict[str, str] | None = None,
    app_prefix: bool = False,
) -> Slug:
    """Build a slug and put it in the `slugs` bucket under its sha256 digest."""
    import tempfile
    from pathlib import Path

    from slipway import objstore
    from tests.harness import secure

    blob, types = build_slug(extra_files, process_types=process_types, app_prefix=app_prefix)
    digest = hashlib.sha256(blob).hexdigest()
    nc = await secure.nats_connect([nats_url], name="test-slugs")
    try:
        stores = objstore.ObjectStores(nc.jetstream())
        if not await stores.exists(objstore.SLUGS, digest):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "slug.tgz"
                path.write_bytes(blob)
                await stores.put_file(objstore.SLUGS, digest, path)
    finally:
        await nc.close()
    return Slug(digest=digest, size=len(blob), process_types=types, data=blob)
