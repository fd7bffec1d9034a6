"""The PostgreSQL provider's pure parts: names, verifiers, storage-limit decisions."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from slipway import errors
from slipway.providers.postgres import (
    day_slot,
    hba_text,
    kept_backups,
    object_name,
    quota_changes,
    schedule_time,
    scheduled_due,
    scram_verifier,
)
from slipway.providers.resources import PROVISIONED, Resource

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


def test_backup_times_are_utc_hours_and_minutes() -> None:
    assert schedule_time("2:30") == "02:30"
    assert schedule_time("02:30 UTC") == "02:30"
    for bad in ("24:00", "02:60", "0230", "2:3", "noon", ""):
        with pytest.raises(errors.InvalidArgument):
            schedule_time(bad)


def test_a_scheduled_backup_is_due_once_per_day_after_its_time() -> None:
    at = "02:30"
    day = 20_000 * 86400.0
    before, after = day + 2 * 3600, day + 3 * 3600
    assert day_slot(at, after) == day_slot(at, before) + 1
    resource = Resource("u", "postgresql", "essential-0", state=PROVISIONED)
    resource.data["backup_schedule"] = {"at": at, "last_slot": day_slot(at, before)}
    assert scheduled_due(resource, before) is None
    assert scheduled_due(resource, after) == day_slot(at, after)
    resource.data["backup_schedule"]["last_slot"] = day_slot(at, after)
    assert scheduled_due(resource, after + 20 * 3600) is None
    assert scheduled_due(resource, after + 24 * 3600) == day_slot(at, after) + 1


def test_manual_and_scheduled_backups_expire_apart() -> None:
    backups = [{"id": f"b00{n}", "created_at": float(n)} for n in (1, 2)]
    backups += [{"id": "a001", "created_at": 3.0}]
    kept, expired = kept_backups(backups, {"id": "a002", "created_at": 4.0}, 1)
    assert [b["id"] for b in kept] == ["b001", "b002", "a002"]
    assert [b["id"] for b in expired] == ["a001"]
    kept, expired = kept_backups(backups, {"id": "b003", "created_at": 4.0}, 2)
    assert [b["id"] for b in kept] == ["b002", "a001", "b003"] and expired[0]["id"] == "b001"
