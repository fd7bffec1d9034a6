from __future__ import annotations

import grpc
import pytest

from slipway import errors
from slipway.backoff import Backoff
from slipway.etcd import grpc_target
from slipway.logline import LogLine, split_message


def test_grpc_target_accepts_endpoint_lists() -> None:
    assert grpc_target(["127.0.0.1:2379"]) == "127.0.0.1:2379"
    assert (
        grpc_target(["http://10.0.0.1:2379", " 10.0.0.2:2379 "])
        == "ipv4:10.0.0.1:2379,10.0.0.2:2379"
    )
    with pytest.raises(errors.InvalidArgument):
        grpc_target([])


def test_status_translation_round_trip() -> None:
    for cls in (
        errors.NotFound,
        errors.AlreadyExists,
        errors.InvalidArgument,
        errors.Conflict,
        errors.Unauthenticated,
        errors.FailedPrecondition,
    ):
        back = errors.from_status(cls.code, "the message")
        assert type(back) is cls and str(back) == "the message"
    assert isinstance(errors.from_status(grpc.StatusCode.DEADLINE_EXCEEDED, ""), errors.Unavailable)


def test_the_reason_travels_in_the_trailing_metadata() -> None:
    sent = errors.NotFound("app 'x' not found", reason="app_not_found")
    (key, value), *_ = errors.trailers(sent)
    back = errors.from_status(sent.code, sent.message, value)
    assert (key, type(back), back.reason) == ("slipway-reason", errors.NotFound, "app_not_found")
    # An older server (or a client-made status) sends none: the class's own reason.
    assert errors.from_status(sent.code, sent.message).reason == "not_found"
    internal = errors.from_status(grpc.StatusCode.INTERNAL, "boom", "internal")
    assert (internal.code, internal.reason) == (grpc.StatusCode.INTERNAL, "internal")


def test_backoff_grows_to_a_cap() -> None:
    b = Backoff(initial=1, maximum=8, jitter=False)
    assert [b.next() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next() == 1


def test_log_lines_render_like_heroku_and_split_long_ones() -> None:
    line = LogLine(app="demo", source="app", process="web.1", message="hello", ts=0.0)
    assert LogLine.decode(line.encode()).message == "hello"
    assert LogLine(app="d", source="heroku", process="router", message="m", ts=1.0).render() == (
        "1970-01-01T00:00:01.000000+00:00 heroku[router]: m"
    )
    pieces = split_message("é" * 6000)  # 12,000 bytes
    assert all(len(p.encode()) <= 10_000 for p in pieces)
    assert "".join(pieces) == "é" * 6000
    assert split_message("short") == ["short"]
