"""Error pages: status per code, HTML naming the code, Retry-After where it helps."""

from __future__ import annotations

import pytest

from router import errors_page as pages
from router.errors_page import ResponseCache, render_response

CODES = [
    pages.H10,
    pages.H11,
    pages.H12,
    pages.H13,
    pages.H14,
    pages.H15,
    pages.H17,
    pages.H18,
    pages.H19,
    pages.H21,
    pages.H27,
    pages.H28,
    pages.H80,
    pages.H81,
    pages.H99,
]


@pytest.mark.parametrize("err", CODES, ids=lambda e: e.code)
def test_each_code_has_a_page(err: pages.RouterError) -> None:
    raw = render_response(err, keep_alive=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {err.status} ".encode())
    assert body.startswith(b"<!DOCTYPE html>")
    assert err.code.encode() in body
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"Content-Type: text/html" in head
    assert (b"Retry-After: " in head) == (err.retry_after is not None)


def test_statuses() -> None:
    assert all(e.status == 503 for e in CODES if e.code not in ("H27", "H28"))
    assert pages.H27.status == 499
    assert pages.NO_SUCH_APP.status == 404
    assert pages.BAD_REQUEST.status == 400 and pages.HEADER_TOO_LARGE.status == 400
    assert {pages.H11.retry_after, pages.H80.retry_after, pages.H99.retry_after} == {1, 60, 5}


def test_connection_header_and_head_only() -> None:
    assert b"Connection: close" in render_response(pages.H12, keep_alive=False)
    assert b"Connection: keep-alive" in render_response(pages.H12, keep_alive=True)
    head = render_response(pages.H12, keep_alive=True, head_only=True)
    assert head.endswith(b"\r\n\r\n") and b"<html" not in head


def test_cache_returns_the_same_bytes() -> None:
    cache = ResponseCache()
    assert cache.get(pages.H14, True) is cache.get(pages.H14, True)
    assert cache.get(pages.H14, True) != cache.get(pages.H14, False)
