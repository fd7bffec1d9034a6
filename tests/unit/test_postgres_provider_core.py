"""The PostgreSQL provider's pure parts: names, verifiers, storage-limit decisions."""

from __future__ import annotations

import base64
import hashlib
import hmac

from slipway.providers.postgres import hba_text, object_name, quota_changes, scram_verifier

MB = 1024 * 1024


def test_over_the_limit_goes_read_only_and_comes_back_only_well_under_it() -> None:
    limits = {"a": 10 * MB, "b": 10 * MB, "c": 0}
    sizes = {"a": 11 * MB, "b": 9 * MB, "c": 99 * MB}
    assert quota_changes(sizes, limits, set()) == (["a"], [])
    # Already limited: not again.
    assert quota_changes(sizes, limits, {"a"}) == ([], [])
    # Just under after a DELETE: stays limited (no flapping); 5% under: lifted.
    assert quota_changes({"a": int(9.8 * MB)}, limits, {"a"}) == ([], [])
    assert quota_changes({"a": 9 * MB}, limits, {"a"}) == ([], ["a"])
    # No limit on the plan: never touched.
    assert quota_changes({"c": 99 * MB}, limits, set()) == ([], [])


def test_the_scram_verifier_is_what_postgresql_checks_a_login_against() -> None:
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt=salt, iterations=4096)
    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt_b64 = head.split(":")
    stored_b64, server_b64 = keys.split(":")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert base64.b64decode(salt_b64) == salt and iterations == "4096"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_b64) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    # A fresh salt each time: two verifiers of one password differ.
    assert scram_verifier("pencil") != scram_verifier("pencil")


def test_names_and_access_rules() -> None:
    name = object_name("5d7ed487-9f12-4a24-a22a-73f6e799a9fd")
    assert name == "db_5d7ed4879f124a24a22a73f6"
    rules = [line.split() for line in hba_text().splitlines() if not line.startswith("#")]
    # TCP: TLS only, own database only, never the superuser; the rest rejected.
    assert ["hostssl", "all", "postgres", "0.0.0.0/0", "reject"] in rules
    assert ["hostssl", "sameuser", "all", "0.0.0.0/0", "scram-sha-256"] in rules
    assert rules[-1][-1] == "reject" and not any(
        r[0] == "host" and r[-1] != "reject" for r in rules
    )
