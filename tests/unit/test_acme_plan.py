"""Automated certificates, the pure part: which domains are ordered when, and
the requests the ACME client signs."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from controller.bus import acme as client
from controller.core import acme as core
from controller.core.acme import AcmeStatus

NOW = 1_800_000_000.0
DAY = 86400.0


def test_due_domains_are_ordered_and_the_rest_left_alone() -> None:
    domains = {"demo": ["new.demo.org", "fresh.demo.org", "old.demo.org", "*.demo.org"]}
    held = {
        ("demo", "fresh.demo.org"): NOW + 60 * DAY,
        ("demo", "old.demo.org"): NOW + 29 * DAY,  # inside the 30 days before its end
    }
    statuses = {
        ("demo", "fresh.demo.org"): core.issued("fresh.demo.org", NOW + 60 * DAY, NOW),
        ("gone", "www.gone.org"): AcmeStatus("www.gone.org"),  # its app turned them off
    }
    todo = core.plan(domains, held, statuses, NOW)
    assert todo.order == [("demo", "new.demo.org"), ("demo", "old.demo.org")]
    assert todo.refuse == [("demo", "*.demo.org")]
    assert todo.forget == [("gone", "www.gone.org")]


def test_a_failing_domain_waits_out_its_backoff_and_a_wildcard_is_refused_once() -> None:
    failing = core.failed(AcmeStatus("www.demo.org"), "connection refused", NOW)
    assert failing.next_attempt == NOW + core.FIRST_RETRY
    statuses = {("demo", "www.demo.org"): failing}
    domains = {"demo": ["www.demo.org"]}
    assert core.plan(domains, {}, statuses, NOW + 30).order == []
    assert core.plan(domains, {}, statuses, NOW + core.FIRST_RETRY).order == [
        ("demo", "www.demo.org")
    ]
    wild = core.failed(AcmeStatus("*.demo.org"), core.WILDCARD_REASON, NOW)
    todo = core.plan({"demo": ["*.demo.org"]}, {}, {("demo", "*.demo.org"): wild}, NOW + DAY)
    assert todo.refuse == [] and todo.order == []


def test_the_backoff_doubles_up_to_six_hours() -> None:
    assert [core.backoff(n) for n in (1, 2, 3, 4)] == [60.0, 120.0, 240.0, 480.0]
    assert core.backoff(30) == core.MAX_RETRY
    again = core.failed(core.failed(AcmeStatus("a.b.c"), "x", NOW), "y", NOW)
    assert again.attempts == 2 and again.last_error == "y"


def test_status_records_survive_the_round_trip() -> None:
    status = core.failed(AcmeStatus("www.demo.org"), "refused", NOW)
    assert AcmeStatus.decode(status.encode()) == status


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_requests_are_signed_es256_with_the_account_key() -> None:
    key = client.new_account_key()
    acme = client.AcmeClient("https://ca.test/dir", key)
    signed = json.loads(acme._sign("https://ca.test/new-order", "nonce-1", {"a": 1}))
    protected = json.loads(_unb64(signed["protected"]))
    assert protected == {
        "alg": "ES256",
        "nonce": "nonce-1",
        "url": "https://ca.test/new-order",
        "jwk": client.jwk(key),
    }
    raw = _unb64(signed["signature"])
    assert len(raw) == 64  # r || s, 32 bytes each, not DER
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    message = f"{signed['protected']}.{signed['payload']}".encode()
    key.public_key().verify(der, message, ec.ECDSA(hashes.SHA256()))
    # Once registered, the account URL stands in for the key; POST-as-GET has no payload.
    acme.account_url = "https://ca.test/acct/1"
    signed = json.loads(acme._sign("https://ca.test/order/1", "nonce-2", None))
    assert json.loads(_unb64(signed["protected"]))["kid"] == "https://ca.test/acct/1"
    assert signed["payload"] == ""


def test_the_key_authorization_is_the_token_and_the_keys_thumbprint() -> None:
    key = client.new_account_key()
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    authorization = client.key_authorization(token, key)
    assert authorization.startswith(token + ".")
    assert len(_unb64(authorization.split(".")[1])) == 32  # a SHA-256 digest
    assert client.key_authorization(token, key) == authorization
    assert client.key_authorization(token, client.new_account_key()) != authorization
