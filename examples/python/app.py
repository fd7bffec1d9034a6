"""A small web app for Slipway: config vars, the dyno's name, and a log line per request."""

import html
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = os.environ.get("GREETING", "Hello from Slipway")
DYNO = os.environ.get("DYNO", "?")
RELEASE_NOTE = "/app/release-note.txt"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, "text/plain", b"ok\n")
            return
        if self.path == "/json":
            body = json.dumps({"greeting": GREETING, "dyno": DYNO}).encode()
            self._send(200, "application/json", body)
            return
        page = (
            "<!doctype html><title>Slipway example</title>"
            f"<h1>{html.escape(GREETING)}</h1>"
            f"<p>Served by dyno <code>{html.escape(DYNO)}</code>.</p>"
            "<p>Change the greeting with <code>slipway config:set GREETING=...</code>.</p>"
        )
        self._send(200, "text/html; charset=utf-8", page.encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        # One line per request on stdout: it shows up in `slipway logs` as app[web.N].
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)


def main() -> None:
    port = int(os.environ.get("PORT", "5000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"listening on port {port} as {DYNO}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
