"""The Heroku Platform API (v3) over HTTPS on a real controller: Heroku's
shapes, statuses, error bodies, paging and headers; permissions decided by
the gRPC API it calls."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slipway import engines
from tests.harness import secure
from tests.harness.controller import ControllerProcess
from tests.harness.people import Person, admin_creates

pytestmark = pytest.mark.integration

V3 = "application/vnd.heroku+json; version=3"


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Api:
    port: int
    token: str

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Answer:
        ctx = ssl.create_default_context(cafile=str(secure.ca_file()))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=20)
        sent = {"Accept": V3, **(headers or {})}
        use = self.token if token is None else token
        if use:
            sent["Authorization"] = f"Bearer {use}"
        payload = raw if raw is not None else (json.dumps(body).encode() if body else None)
        if payload is not None:
            sent["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=sent)
            reply = conn.getresponse()
            data = reply.read()
            return Answer(
                reply.status,
                json.loads(data) if data else None,
                {k.lower(): v for k, v in reply.getheaders()},
            )
        finally:
            conn.close()


@pytest.fixture
def v3(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[tuple[Api, ControllerProcess]]:
    port = engines.free_port()
    proc = ControllerProcess(
        etcd_endpoint,
        etcd_prefix,
        tmp_path / "controller",
        nats_url,
        extra_args=["--platform-api-listen", f"127.0.0.1:{port}"],
    )
    proc.start()
    engines.wait_for_port("127.0.0.1", port, 20, proc.proc)
    yield Api(port, proc.token), proc
    proc.stop()


def test_apps_config_vars_and_domains_in_herokus_shape(v3: tuple[Api, ControllerProcess]) -> None:
    api, _ = v3
    assert api.call("GET", "/account").body["name"] == "test"
    created = api.call("POST", "/apps", {"name": "demo"})
    assert created.status == 201
    app = created.body
    assert app["name"] == "demo" and len(app["id"]) == 36
    assert app["web_url"] == "http://demo.localhost/" and app["created_at"].endswith("Z")
    assert app["stack"]["name"] and app["region"]["name"] == "local"
    taken = api.call("POST", "/apps", {"name": "demo"})
    assert taken.status == 422 and taken.body["id"] == "invalid_params"
    assert "demo" in taken.body["message"]
    # By name or by id, the same app.
    assert api.call("GET", f"/apps/{app['id']}").body == api.call("GET", "/apps/demo").body
    assert [a["name"] for a in api.call("GET", "/apps").body] == ["demo"]

    config = api.call("PATCH", "/apps/demo/config-vars", {"A": "1", "B": "x", "N": 3})
    assert config.status == 200 and config.body == {"A": "1", "B": "x", "N": "3"}
    config = api.call("PATCH", "/apps/demo/config-vars", {"A": None})
    assert config.body == {"B": "x", "N": "3"}
    assert api.call("GET", "/apps/demo/config-vars").body == {"B": "x", "N": "3"}

    added = api.call("POST", "/apps/demo/domains", {"hostname": "www.demo.org"})
    assert added.status == 201
    assert (added.body["kind"], added.body["cname"]) == ("custom", "demo.localhost")
    listed = api.call("GET", "/apps/demo/domains").body
    assert [(d["hostname"], d["kind"]) for d in listed] == [
        ("demo.localhost", "heroku"),
        ("www.demo.org", "custom"),
    ]
    bad = api.call("POST", "/apps/demo/domains", {"hostname": "*.com"})
    assert bad.status == 422 and "wildcard" in bad.body["message"]
    assert api.call("DELETE", "/apps/demo/domains/www.demo.org").status == 200
    missing = api.call("GET", "/apps/demo/domains/www.demo.org")
    assert missing.status == 404 and missing.body["id"] == "not_found"

    # The formation, in batch and one type at a time, absolute and relative.
    assert api.call("GET", "/apps/demo/formation").body == []
    assert api.call("GET", "/apps/demo/dynos").body == []
    scale = api.call("PATCH", "/apps/demo/formation", {"updates": [{"type": "web", "quantity": 1}]})
    assert scale.status == 200 and [(f["type"], f["quantity"]) for f in scale.body] == [("web", 1)]
    more = api.call("PATCH", "/apps/demo/formation/web", {"quantity": "+2"})
    assert more.status == 200 and more.body["quantity"] == 3
    assert api.call("GET", "/apps/demo/formation/web").body["quantity"] == 3
    odd = api.call("PATCH", "/apps/demo/formation/web", {"quantity": "lots"})
    assert odd.status == 422 and "not a number" in odd.body["message"]
    assert api.call("GET", "/apps/demo/formation/worker").status == 404

    assert api.call("DELETE", "/apps/demo").body["name"] == "demo"
    gone = api.call("GET", "/apps/demo")
    assert gone.status == 404 and gone.body == {"id": "not_found", "message": gone.body["message"]}


def test_releases_page_with_range_and_next_range(v3: tuple[Api, ControllerProcess]) -> None:
    api, _ = v3
    api.call("POST", "/apps", {"name": "demo"})
    for n in range(3):  # after v1 (the app's first), each config change is one: v2-v4
        api.call("PATCH", "/apps/demo/config-vars", {"N": str(n)})
    whole = api.call("GET", "/apps/demo/releases")
    assert whole.status == 200
    assert [r["version"] for r in whole.body] == [1, 2, 3, 4]
    assert [r["current"] for r in whole.body] == [False, False, False, True]
    first = api.call("GET", "/apps/demo/releases", headers={"Range": "version ..; max=2"})
    assert first.status == 206 and [r["version"] for r in first.body] == [1, 2]
    assert first.headers["next-range"] == "version ]2..; max=2"
    rest = api.call("GET", "/apps/demo/releases", headers={"Range": first.headers["next-range"]})
    assert rest.status == 200 and [r["version"] for r in rest.body] == [3, 4]
    newest = api.call(
        "GET", "/apps/demo/releases", headers={"Range": "version ..; max=1, order=desc"}
    )
    assert [r["version"] for r in newest.body] == [4]
    wrong = api.call("GET", "/apps/demo/releases", headers={"Range": "colour ..; max=2"})
    assert wrong.status == 422 and "version" in wrong.body["message"]


def test_bad_requests_get_herokus_errors_never_a_500(v3: tuple[Api, ControllerProcess]) -> None:
    api, _ = v3
    api.call("POST", "/apps", {"name": "demo"})
    cases = [
        (api.call("GET", "/account", token=""), 401, "unauthorized"),
        (api.call("GET", "/account", token="not-a-token"), 401, "unauthorized"),
        (api.call("POST", "/apps", raw=b"{not json"), 400, "bad_request"),
        (api.call("POST", "/apps", raw=b"[1, 2]"), 400, "bad_request"),
        (api.call("POST", "/apps", {"name": 7}), 422, "invalid_params"),
        (api.call("PATCH", "/apps/demo/config-vars", {"A": {"deep": 1}}), 422, "invalid_params"),
        (api.call("POST", "/apps", raw=b"{" + b" " * (2 << 20) + b"}"), 413, "request_too_large"),
        (api.call("GET", "/account", headers={"Accept": "application/vnd.heroku+json; version=2"}),
         406, "not_acceptable"),
        (api.call("GET", "/nowhere"), 404, "not_found"),
        (api.call("PUT", "/account"), 405, "method_not_allowed"),
    ]  # fmt: skip
    for answer, status, error_id in cases:
        assert (answer.status, answer.body["id"]) == (status, error_id), answer
        assert answer.body["message"]
    ok = api.call("GET", "/account", headers={"Request-Id": "trace-123"})
    assert ok.headers["request-id"] == "trace-123"
    after = api.call("GET", "/account")
    assert int(after.headers["ratelimit-remaining"]) < int(ok.headers["ratelimit-remaining"])


def test_permissions_are_the_grpc_apis(v3: tuple[Api, ControllerProcess], tmp_path: Path) -> None:
    api, controller = v3
    api.call("POST", "/apps", {"name": "demo"})
    admin_creates(controller, "bob@example.com")
    bob = Person("bob@example.com", controller, tmp_path / "bob.json")
    bob.login()
    # Bob sees only his own apps, and none of the operator's.
    assert api.call("GET", "/apps", token=bob.token).body == []
    hidden = api.call("GET", "/apps/demo/config-vars", token=bob.token)
    assert hidden.status in (403, 404) and hidden.body["id"] in ("forbidden", "not_found")
    mine = api.call("POST", "/apps", {"name": "bobs"}, token=bob.token)
    assert mine.status == 201 and mine.body["owner"]["email"] == "bob@example.com"
    assert api.call("GET", "/account", token=bob.token).body["email"] == "bob@example.com"
