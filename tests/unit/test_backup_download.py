"""pg:backups:download, the pure parts: which backup, which bytes."""

from __future__ import annotations

import pytest

from controller.api.backups_api import chosen_backup
from slipway import errors
from slipway.providers.partner import BACKUP_CHUNK, byte_range

KEPT = {
    "backups": [
        {"id": "b001", "created_at": 10.0, "size_bytes": 5},
        {"id": "a001", "created_at": 30.0, "size_bytes": 7},
        {"id": "b002", "created_at": 20.0, "size_bytes": 6},
    ]
}


def test_the_latest_backup_is_the_newest_of_either_kind() -> None:
    assert chosen_backup(KEPT, "", "db")["id"] == "a001"
    assert chosen_backup(KEPT, "b002", "db")["size_bytes"] == 6


def test_a_missing_backup_names_the_ones_there_are() -> None:
    with pytest.raises(errors.NotFound, match="b001, a001, b002"):
        chosen_backup(KEPT, "b404", "db")
    with pytest.raises(errors.FailedPrecondition, match="no backups yet"):
        chosen_backup({"backups": []}, "", "db")
    with pytest.raises(errors.FailedPrecondition, match="keeps no backups"):
        chosen_backup({"plan": "mini"}, "", "cache")


def test_byte_ranges_are_bounded() -> None:
    assert byte_range("") == (0, BACKUP_CHUNK)
    assert byte_range("offset=100&length=10") == (100, 10)
    for bad in ("offset=-1", f"length={BACKUP_CHUNK + 1}", "length=0", "offset=x"):
        with pytest.raises(errors.InvalidArgument):
            byte_range(bad)
