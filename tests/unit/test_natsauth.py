"""The NATS permission table and log-line origins (pure: no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway import logline, natsauth
from slipway.logline import Origin
from slipway.pki import Bundle, Role


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more at the end."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may_publish(role: Role, subject: str) -> bool:
    return any(matches(p, subject) for p in natsauth.permissions(role).publish)


def may_subscribe(role: Role, subject: str) -> bool:
    return any(matches(p, subject) for p in natsauth.permissions(role).subscribe)


@pytest.mark.parametrize(
    ("role", "subject", "allowed"),
    [
        # Log lines: each role on its own origin only.
        (Role.ROUTER, "logs.demo.router", True),
        (Role.ROUTER, "logs.demo.node", False),
        (Role.ROUTER, "logs.demo", False),
        (Role.NODE, "logs.demo.node", True),
        (Role.NODE, "logs.demo.router", False),
        (Role.NODE, "logs.demo.controller", False),
        (Role.BUILDER, "logs.demo.builder", True),
        (Role.BUILDER, "logs.demo.router", False),
        # Slugs: a node reads them, never writes; a builder does both.
        (Role.NODE, "$JS.API.STREAM.MSG.GET.OBJ_slugs", True),
        (Role.NODE, "$JS.API.CONSUMER.CREATE.OBJ_slugs", True),
        (Role.NODE, "$O.slugs.C.abc", False),
        (Role.NODE, "$O.slugs.M.abc", False),
        (Role.NODE, "$JS.API.STREAM.PURGE.OBJ_slugs", False),
        (Role.NODE, "$JS.API.STREAM.INFO.OBJ_sources", False),
        (Role.NODE, "$JS.API.CONSUMER.CREATE.OBJ_caches", False),
        (Role.BUILDER, "$O.slugs.C.abc", True),
        (Role.BUILDER, "$O.caches.M.abc", True),
        (Role.BUILDER, "$JS.API.STREAM.MSG.GET.OBJ_sources", True),
        (Role.BUILDER, "$O.sources.C.abc", False),  # sources come from the controller
        # The router reads nothing at all.
        (Role.ROUTER, "$JS.API.STREAM.INFO.OBJ_slugs", False),
        (Role.ROUTER, "$JS.API.STREAM.INFO.LOGS", False),
        # Builds: builders take jobs and report; only the controller submits.
        (Role.BUILDER, "$JS.API.CONSUMER.MSG.NEXT.BUILDS.builders", True),
        (Role.BUILDER, "$JS.ACK.BUILDS.builders.1.2.3.4.5", True),
        (Role.BUILDER, "builds.status.b1", True),
        (Role.BUILDER, "builds.output.b1", True),
        (Role.BUILDER, "builds.jobs", False),
        (Role.BUILDER, "$JS.API.CONSUMER.MSG.NEXT.BUILDS.other", False),
        (Role.BUILDER, "$JS.API.CONSUMER.CREATE.LOGS", False),
        (Role.BUILDER, "$JS.API.STREAM.CREATE.BUILDS", False),
        (Role.BUILDER, "$JS.API.STREAM.UPDATE.BUILDS", False),
        (Role.BUILDER, "$JS.API.STREAM.DELETE.OBJ_slugs", False),
        (Role.NODE, "builds.status.b1", False),
        # The add-ons hosts: their backups bucket and nothing else.
        (Role.ADDONS, "$O.addonbackups.C.x", True),
        (Role.ADDONS, "$JS.API.STREAM.INFO.OBJ_addonbackups", True),
        (Role.ADDONS, "$O.slugs.C.x", False),
        (Role.ADDONS, "$JS.API.STREAM.INFO.OBJ_sources", False),
        (Role.ADDONS, "$JS.API.STREAM.CREATE.OBJ_addonbackups", False),
        (Role.ADDONS, "logs.demo.node", False),
        (Role.BUILDER, "$O.addonbackups.C.x", False),
        # The controller and root: everything.
        (Role.CONTROLLER, "$JS.API.STREAM.CREATE.LOGS", True),
        (Role.ROOT, "$O.sources.C.x", True),
    ],
)
def test_publish_permissions(role: Role, subject: str, allowed: bool) -> None:
    assert may_publish(role, subject) is allowed


def test_no_role_but_the_controller_and_root_gets_wildcard_jetstream() -> None:
    for role in (Role.NODE, Role.ROUTER, Role.BUILDER):
        perms = natsauth.permissions(role)
        assert not {">", "$JS.>", "$JS.API.>", "$O.>", "logs.>"} & set(perms.publish), role
        assert ">" not in perms.subscribe and "_INBOX.>" not in perms.subscribe, role


@pytest.mark.parametrize(
    ("role", "subject", "allowed"),
    [
        (Role.NODE, "_INBOX.node.abc.1", True),
        (Role.NODE, "_INBOX.builder.abc.1", False),
        (Role.NODE, "logs.demo.node", False),
        (Role.BUILDER, "_INBOX.builder.abc", True),
        (Role.BUILDER, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BUILDS.builders", True),
        (Role.BUILDER, "logs.demo.router", False),
        (Role.ROUTER, "_INBOX.router.abc", False),
        (Role.ROUTER, "logs.demo.router", False),
        (Role.CONTROLLER, "logs.demo.router", True),
        (Role.ADDONS, "_INBOX.addons.abc", True),
        (Role.ADDONS, "_INBOX.node.abc", False),
    ],
)
def test_subscribe_permissions(role: Role, subject: str, allowed: bool) -> None:
    assert may_subscribe(role, subject) is allowed


def test_engines_are_not_clients() -> None:
    with pytest.raises(ValueError, match="engine"):
        natsauth.permissions(Role.ENGINE)


def test_server_config() -> None:
    engine = Bundle(Path("/etc/slipway/engine"))
    plain = natsauth.server_config(max_store_bytes=1000)
    assert plain == "jetstream { max_file_store: 1000 }\n"
    assert natsauth.server_config() == ""

    text = natsauth.server_config(
        tls=engine, cluster=natsauth.Cluster("c", "10.0.0.1", 6222, ("nats://10.0.0.2:6222",))
    )
    assert text.count("verify_and_map: true") == 2  # clients and routes
    assert '"/etc/slipway/engine/ca.crt"' in text
    for role in natsauth.CLIENT_ROLES:
        assert f'user: "{role.value}@slipway"' in text
    assert 'authorization { user: "engine@slipway" }' in text  # the route user
    assert '"nats://10.0.0.2:6222"' in text and 'listen: "10.0.0.1:6222"' in text
    assert "no_auth_user" not in text and "http" not in text
    assert '{ deny: [">"] }' in text  # the router's subscriptions


@pytest.mark.parametrize(
    ("origin", "source", "process", "trusted"),
    [
        (Origin.ROUTER, "heroku", "router", True),
        (Origin.ROUTER, "app", "web.1", False),
        (Origin.ROUTER, "api", "api", False),
        (Origin.NODE, "app", "web.1", True),
        (Origin.NODE, "heroku", "web.1", True),
        (Origin.NODE, "heroku", "router", False),
        (Origin.NODE, "api", "api", False),
        (Origin.NODE, "app", "build", False),
        (Origin.BUILDER, "api", "build", True),
        (Origin.BUILDER, "heroku", "router", False),
        (Origin.BUILDER, "app", "web.1", False),
        (Origin.CONTROLLER, "heroku", "logplex", True),
        (Origin.CONTROLLER, "api", "api", True),
        (None, "app", "web.1", False),
    ],
)
def test_line_origins(origin: Origin | None, source: str, process: str, trusted: bool) -> None:
    assert logline.trusted(origin, source, process) is trusted


def test_subjects_carry_the_origin() -> None:
    assert logline.subject("demo", Origin.ROUTER) == "logs.demo.router"
    assert matches(logline.app_filter("demo"), "logs.demo.router")
    assert not matches(logline.app_filter("demo"), "logs.demo2.router")
    assert logline.origin_of("logs.demo.node") is Origin.NODE
    assert logline.origin_of("logs.demo") is None  # published before origins existed
    assert logline.origin_of("logs.demo.somebody") is None
    for origin in Origin:
        assert matches(logline.publish_filter(origin), logline.subject("demo", origin))


def test_decode_refuses_a_forged_line() -> None:
    forged = logline.LogLine("demo", "heroku", "router", "at=info", 1.0).encode()
    assert logline.LogLine.decode(forged, "logs.demo.router").process == "router"
    assert logline.LogLine.decode(forged).process == "router"  # no subject: no check
    with pytest.raises(ValueError, match="cannot come from"):
        logline.LogLine.decode(forged, "logs.demo.builder")
