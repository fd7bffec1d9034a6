"""Who may call what (controller/api/auth.py), join-token durations, TLS failure sentences."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from controller.api.auth import Caller, Policy, Scope, authorize
from controller.core.models import TokenRecord
from controller.pki_cli import parse_duration
from slipway import errors, tls

OPERATOR = Caller("admin")
N1 = Caller("node.n1", node="n1")
ADA = Caller("login ada@example.com", user="ada@example.com")
STRICT = Policy()
LEGACY = Policy(legacy_node_api_tokens=True)

ALLOWED = [
    (OPERATOR, Scope.API, "", STRICT),
    (OPERATOR, Scope.API, "", LEGACY),
    (N1, Scope.NODE, "n1", STRICT),
    (N1, Scope.NODE, "n1", LEGACY),
    # Plaintext controllers: agents with an operator token, as before node tokens.
    (OPERATOR, Scope.NODE, "n1", LEGACY),
]
DENIED = [
    (N1, Scope.API, "", STRICT, "node_token"),
    (N1, Scope.API, "", LEGACY, "node_token"),
    (N1, Scope.NODE, "n2", STRICT, "wrong_node"),
    (N1, Scope.NODE, "n2", LEGACY, "wrong_node"),
    (N1, Scope.NODE, "", STRICT, "wrong_node"),
    (OPERATOR, Scope.NODE, "n1", STRICT, "not_node_token"),
    # A person's token never speaks for a node, not even on a plaintext controller.
    (ADA, Scope.NODE, "n1", LEGACY, "not_node_token"),
    (ADA, Scope.NODE, "n1", STRICT, "not_node_token"),
]


@pytest.mark.parametrize(("caller", "scope", "node", "policy"), ALLOWED)
def test_allowed(caller: Caller, scope: Scope, node: str, policy: Policy) -> None:
    authorize(caller, scope, node=node, policy=policy)


@pytest.mark.parametrize(("caller", "scope", "node", "policy", "reason"), DENIED)
def test_denied(caller: Caller, scope: Scope, node: str, policy: Policy, reason: str) -> None:
    with pytest.raises(errors.PermissionDenied) as info:
        authorize(caller, scope, node=node, policy=policy)
    assert info.value.reason == reason


def test_denials_say_what_to_do() -> None:
    with pytest.raises(errors.PermissionDenied, match="tokens create"):
        authorize(N1, Scope.API)
    with pytest.raises(errors.PermissionDenied, match="slipway-agent join"):
        authorize(OPERATOR, Scope.NODE, node="n1")
    with pytest.raises(errors.PermissionDenied, match=r"'n1'.*'n2'"):
        authorize(N1, Scope.NODE, node="n2")


def test_old_token_records_are_operator_tokens() -> None:
    record = TokenRecord.decode(b'{"name": "admin", "created_at": 1.0}')
    assert record.node == ""
    assert TokenRecord.decode(TokenRecord("node.n1", 2.0, node="n1").encode()).node == "n1"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("7D", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1w", "h", "-5m", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_duration(text)


CA = Path("/etc/slipway/ca.crt")


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        (
            "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
            "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
            f"the controller's certificate is not signed by the cluster CA in {CA}",
        ),
        ("SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER", "does not speak TLS"),
        ("Custom verification check failed: Hostname Verification Check failed.", "--host"),
        ("failed to connect to all addresses; Connection refused", ""),
    ],
)
def test_tls_failures_in_one_sentence(detail: str, expected: str) -> None:
    sentence = tls.tls_failure(detail, CA)
    assert (expected in sentence) if expected else sentence == ""


def test_a_plaintext_client_hears_of_the_ca_file() -> None:
    error = tls.unreachable("10.0.0.1:7070", "last error: UNAVAILABLE: Socket closed", None)
    assert "cannot reach the controller at 10.0.0.1:7070" in error.message
    assert "--ca-file" in error.message
    assert "--ca-file" not in tls.unreachable("h:1", "Connection refused", None).message
