from __future__ import annotations

import pytest

from controller.core import validation
from controller.core.sizes import SizeTable
from slipway import errors


@pytest.mark.parametrize("name", ["abc", "demo", "my-app-2", "a" + "b" * 29, "x-1"])
def test_valid_app_names(name: str) -> None:
    assert validation.app_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "ab", "a" * 31, "1app", "-app", "App", "my_app", "my.app", "démo", "app!"]
)
def test_invalid_app_names(name: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="3 to 30 characters"):
        validation.app_name(name)


@pytest.mark.parametrize("key", ["A", "a", "_X", "DATABASE_URL", "k9", "lower_case"])
def test_valid_config_keys(key: str) -> None:
    assert validation.config_key(key) == key


@pytest.mark.parametrize("key", ["", "9A", "A-B", "A B", "A.B", "Ä", "A=B"])
def test_invalid_config_keys(key: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="letters, digits and underscores"):
        validation.config_key(key)


def test_config_size_counts_keys_and_values_in_bytes() -> None:
    assert validation.config_size({"AB": "cd", "E": "é"}) == 2 + 2 + 1 + 2
    limit = validation.CONFIG_MAX_BYTES
    validation.config_vars({"K": "x" * (limit - 1)})
    with pytest.raises(errors.InvalidArgument, match="the limit is 32768 bytes"):
        validation.config_vars({"K": "x" * limit})


def test_quantity_bounds() -> None:
    assert validation.quantity("web", 0) == 0
    assert validation.quantity("web", 100) == 100
    with pytest.raises(errors.InvalidArgument, match="below 0"):
        validation.quantity("web", -1)
    with pytest.raises(errors.InvalidArgument, match="at most 100"):
        validation.quantity("web", 101)


def test_size_table_defaults_and_operator_extension() -> None:
    table = SizeTable({"Tiny-1x": {"memory_mb": 128, "max_processes": 32}})
    assert table.get("standard-1x").memory_mb == 512
    assert table.get("standard-2x").memory_mb == 1024
    assert table.get("performance-m").memory_mb == 2560
    assert table.get("performance-l").memory_mb == 14336
    assert table.get("STANDARD-2X").name == "standard-2x"
    assert table.get("tiny-1x").max_processes == 32
    assert table.names()[0] == "tiny-1x", "sorted by memory"
    with pytest.raises(errors.InvalidArgument, match="unknown dyno size 'huge'; sizes: tiny-1x"):
        table.get("huge")
    with pytest.raises(errors.InvalidArgument, match="integer memory_mb"):
        SizeTable({"bad": {}})
