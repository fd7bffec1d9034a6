"""Two web dynos, one counter: the count lives in the Redis add-on, not in a dyno.

Every page view is an ``INCR hits``; the page says the count and which dyno
answered, so scaled to several dynos the numbers still go up one by one.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

DYNO = os.environ.get("DYNO", "?")
# Heroku's advice for its Redis too: the server's certificate is the platform's own.
store = redis.from_url(os.environ["REDIS_URL"], ssl_cert_reqs=None, socket_timeout=10)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, "text/plain", b"ok\n")
            return
        try:
            hits = store.incr("hits")
        except redis.RedisError as exc:
            self._send(503, "text/plain", f"redis unavailable: {exc}\n".encode())
            return
        if self.path == "/json":
            self._send(200, "application/json", json.dumps({"hits": hits, "dyno": DYNO}).encode())
            return
        page = f"<!doctype html><title>Hits</title><h1>{hits} hits</h1><p>by dyno {DYNO}</p>"
        self._send(200, "text/html; charset=utf-8", page.encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    print(f"listening on port {port} as {DYNO}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
