"""The Platform API's pure part: Range parsing and paging, error statuses."""

from __future__ import annotations

import grpc
import pytest

from controller.api import v3_shapes as shapes
from slipway import errors

ITEMS = [{"version": v, "name": f"app-{v:02d}"} for v in range(1, 8)]


def by(field: str):  # type: ignore[no-untyped-def]
    return lambda item: item[field]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", shapes.Range("version")),
        ("version ..; max=3", shapes.Range("version", max=3)),
        ("version ]3..; max=2", shapes.Range("version", "3", True, "", 2)),
        ("name app-02..app-05", shapes.Range("name", "app-02", False, "app-05")),
        ("version ..; max=1, order=desc", shapes.Range("version", max=1, descending=True)),
        ("version ..; order=desc; max=5", shapes.Range("version", max=5, descending=True)),
    ],
)
def test_range_headers(header: str, expected: shapes.Range) -> None:
    assert shapes.parse_range(header, ("version", "name")) == expected


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("colour ..", "over one of: version, name"),
        ("version ..; max=0", "max must be 1 to 1000"),
        ("version ..; max=1001", "max must be 1 to 1000"),
        ("version ..; order=up", "order must be asc or desc"),
        ("nonsense", "Range must look like"),
    ],
)
def test_bad_range_headers_say_why(header: str, says: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=says):
        shapes.parse_range(header, ("version", "name"))


def test_pages_follow_next_range_to_the_end() -> None:
    wanted = shapes.parse_range("version ..; max=3", ("version",))
    seen: list[int] = []
    while True:
        chosen, next_range = shapes.page(ITEMS, wanted, by("version"))
        seen += [item["version"] for item in chosen]
        if next_range is None:
            break
        wanted = shapes.parse_range(next_range, ("version",))
    assert seen == list(range(1, 8))


def test_descending_pages_and_inclusive_starts() -> None:
    wanted = shapes.parse_range("version ..; max=2, order=desc", ("version",))
    chosen, next_range = shapes.page(ITEMS, wanted, by("version"))
    assert [i["version"] for i in chosen] == [7, 6]
    assert next_range == "version ]6..; max=2, order=desc"
    chosen, _ = shapes.page(ITEMS, shapes.parse_range(next_range, ("version",)), by("version"))
    assert [i["version"] for i in chosen] == [5, 4]
    chosen, done = shapes.page(ITEMS, shapes.Range("name", "app-06"), by("name"))
    assert [i["name"] for i in chosen] == ["app-06", "app-07"] and done is None
    with pytest.raises(errors.InvalidArgument, match="not a version"):
        shapes.page(ITEMS, shapes.Range("version", "three"), by("version"))


def test_grpc_statuses_map_to_herokus_errors() -> None:
    assert shapes.status_of(grpc.StatusCode.NOT_FOUND) == (404, "not_found")
    assert shapes.status_of(grpc.StatusCode.UNAUTHENTICATED) == (401, "unauthorized")
    assert shapes.status_of(grpc.StatusCode.PERMISSION_DENIED) == (403, "forbidden")
    assert shapes.status_of(grpc.StatusCode.ALREADY_EXISTS) == (422, "invalid_params")
    assert shapes.status_of(grpc.StatusCode.INTERNAL) == (500, "internal_server_error")


@pytest.mark.parametrize(
    ("value", "field", "amount"),
    [(2, "quantity", 2), ("3", "quantity", 3), ("+1", "delta", 1), ("-2", "delta", -2)],
)
def test_formation_quantities_arrive_as_numbers_strings_or_changes(
    value: object, field: str, amount: int
) -> None:
    change = shapes.quantity_change("web", value, None)
    assert change.WhichOneof("amount") == field and getattr(change, field) == amount


@pytest.mark.parametrize(
    ("value", "size", "says"),
    [
        ("two", None, "not a number"),
        (True, None, "must be a number"),
        ([1], None, "must be a number"),
        (None, None, "give a quantity or a size"),
        (1, 2, "size must be a string"),
    ],
)
def test_bad_formation_updates_say_why(value: object, size: object, says: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=says):
        shapes.quantity_change("web", value, size)
