"""A small real add-on provider for tests: Heroku's partner API v3 on an HTTP server.

It keeps one resource per provision uuid (a provision delivered twice makes
one), answers as scripted (``fail_first`` 500s, then 200 with the config, or
202 and the config later through the platform's callback API), and records
every request it got, so tests can assert what reached it and how often.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PASSWORD = "test-provider-password-0123456789"


@dataclass
class Received:
    method: str
    path: str
    body: dict[str, Any]
    authorized: bool


@dataclass
class Resource:
    id: str
    uuid: str
    plan: str
    options: dict[str, str]
    config: dict[str, str]


@dataclass
class Script:
    mode: str = "sync"  # "sync" (200 with config) or "async" (202, callback later)
    fail_first: int = 0  # provision requests answered 500 before the real answer
    refuse_first: int = 0  # provision requests answered 422 before the real answer
    refusal: str = "no capacity left in this region"
    # Provision requests held (no answer) until ``release_held`` is set.
    hold_first: int = 0
    release_held: threading.Event = field(default_factory=threading.Event)
    # The URL config var of a resource ({rid}, {plan} filled in).
    url_template: str = "test://{rid}/{plan}"


class Provider:
    def __init__(self, name: str, ca_file: Path, script: Script | None = None) -> None:
        self.name = name
        self.ca_file = ca_file
        self.script = script or Script()
        self.received: list[Received] = []
        self.resources: dict[str, Resource] = {}  # by provision uuid
        self.deleted: list[str] = []  # uuids of deprovisioned resources
        self.callback_errors: list[str] = []
        self.held = threading.Event()  # a provision request is being held
        self._lock = threading.Lock()
        self._provisions = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/heroku/resources"

    def manifest(self, **extra: Any) -> dict[str, Any]:
        prefix = self.name.upper().replace("-", "_")
        doc: dict[str, Any] = {
            "id": self.name,
            "name": f"{self.name} (test provider)",
            "api": {
                "password": PASSWORD,
                "config_vars_prefix": prefix,
                "config_vars": [f"{prefix}_URL"],
                "production": {"base_url": self.base_url},
            },
            "plans": [
                {"name": "small", "description": "a little", "default": True},
                {"name": "large", "description": "a lot", "price_cents_per_month": 5000},
            ],
        }
        doc.update(extra)
        return doc

    def write_manifest(self, path: Path, **extra: Any) -> Path:
        path.write_text(json.dumps(self.manifest(**extra)))
        return path

    def __enter__(self) -> Provider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.script.release_held.set()
        self._server.shutdown()
        self._server.server_close()

    def requests(self, method: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.method == method]

    # -- serving ----------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else {}

            def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                expected = base64.b64encode(f"{provider.name}:{PASSWORD}".encode()).decode()
                return self.headers.get("Authorization", "") == f"Basic {expected}"

            def _record(self, body: dict[str, Any]) -> bool:
                ok = self._authorized()
                with provider._lock:
                    provider.received.append(Received(self.command, self.path, body, ok))
                if not ok:
                    self._reply(401, {"message": "bad credentials"})
                return ok

            def do_POST(self) -> None:
                body = self._body()
                if self._record(body):
                    provider._provision(self, body)

            def do_PUT(self) -> None:
                body = self._body()
                if self._record(body):
                    provider._change_plan(self, body)

            def do_DELETE(self) -> None:
                if self._record({}):
                    provider._deprovision(self)

        return Handler

    def _provision(self, handler: Any, body: dict[str, Any]) -> None:
        with self._lock:
            self._provisions += 1
            n = self._provisions
        script = self.script
        if n <= script.hold_first:
            # Made the resource, then is slow to say so: the platform may give up
            # (or die) and ask again; the same uuid gets the same resource.
            self._resource(body)
            self.held.set()
            script.release_held.wait(60)
            handler._reply(503, {"message": "held"})
            return
        n -= script.hold_first
        if n <= script.fail_first:
            handler._reply(500, {"message": "temporarily broken"})
            return
        n -= script.fail_first
        if n <= script.refuse_first:
            handler._reply(422, {"message": script.refusal})
            return
        resource = self._resource(body)
        if script.mode == "async":
            handler._reply(202, {"id": resource.id, "message": "making it, hold on"})
            threading.Thread(
                target=self._deliver, args=(body["callback_url"], resource), daemon=True
            ).start()
            return
        handler._reply(200, {"id": resource.id, "config": resource.config, "message": "ready"})

    def _resource(self, body: dict[str, Any]) -> Resource:
        with self._lock:
            resource = self.resources.get(body["uuid"])
            if resource is None:
                rid = f"res-{uuid.uuid4().hex[:8]}"
                prefix, plan = self.name.upper().replace("-", "_"), body["plan"]
                resource = Resource(
                    rid,
                    body["uuid"],
                    body["plan"],
                    dict(body.get("options") or {}),
                    {f"{prefix}_URL": self.script.url_template.format(rid=rid, plan=plan)},
                )
                self.resources[body["uuid"]] = resource
            return resource

    def _deliver(self, callback_url: str, resource: Resource) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        auth = base64.b64encode(f"{self.name}:{PASSWORD}".encode()).decode()
        config = [{"name": k, "value": v} for k, v in resource.config.items()]
        for method, url, payload in (
            ("PATCH", f"{callback_url}/config", {"config": config}),
            ("POST", f"{callback_url}/actions/provision", {}),
        ):
            request = urllib.request.Request(
                url,
                data=json.dumps(payload).encode(),
                method=method,
                headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                    answer.read()
            except Exception as exc:  # recorded for the test to show
                self.callback_errors.append(f"{method} {url}: {exc}")
                return

    def _resource_by_id(self, rid: str) -> Resource | None:
        return next((r for r in self.resources.values() if r.id == rid), None)

    def _change_plan(self, handler: Any, body: dict[str, Any]) -> None:
        rid = handler.path.rsplit("/", 1)[-1]
        with self._lock:
            resource = self._resource_by_id(rid)
            if resource is None:
                handler._reply(404, {"message": "no such resource"})
                return
            resource.plan = body["plan"]
            key = next(iter(resource.config))
            resource.config[key] = f"test://{resource.id}/{resource.plan}"
        handler._reply(200, {"config": resource.config, "message": f"now on {body['plan']}"})

    def _deprovision(self, handler: Any) -> None:
        rid = handler.path.rsplit("/", 1)[-1]
        with self._lock:
            resource = self._resource_by_id(rid)
            if resource is None:
                handler._reply(410, {"message": "already gone"})
                return
            del self.resources[resource.uuid]
            self.deleted.append(resource.uuid)
        handler._reply(204)
