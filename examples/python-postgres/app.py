"""A web app keeping its state where dynos keep theirs: in the database add-on.

Every page view is a row in ``visits`` (made by the release phase); the page
says how many there are, from any dyno, across restarts and deploys.
"""

import html
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

DATABASE_URL = os.environ["DATABASE_URL"]
DYNO = os.environ.get("DYNO", "?")


def record_visit() -> dict[str, object]:
    with psycopg.connect(DATABASE_URL, connect_timeout=10) as conn:
        conn.execute("INSERT INTO visits (dyno) VALUES (%s)", (DYNO,))
        count, database, tls = conn.execute(
            "SELECT (SELECT count(*) FROM visits), current_database(),"
            " (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
        ).fetchone()
    return {"visits": count, "database": database, "tls": tls, "dyno": DYNO}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, "text/plain", b"ok\n")
            return
        try:
            seen = record_visit()
        except psycopg.Error as exc:
            self._send(503, "text/plain", f"database unavailable: {exc}\n".encode())
            return
        if self.path == "/json":
            self._send(200, "application/json", json.dumps(seen).encode())
            return
        page = (
            "<!doctype html><title>Visits</title>"
            f"<h1>{seen['visits']} visits</h1>"
            f"<p>Counted in <code>{html.escape(str(seen['database']))}</code> "
            f"by dyno <code>{html.escape(DYNO)}</code>.</p>"
        )
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
