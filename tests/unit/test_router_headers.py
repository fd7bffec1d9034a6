"""Header rules: analysis, refusal, stripping, forwarding headers."""

from __future__ import annotations

import uuid

import pytest

from router.headers import (
    BadRequest,
    analyse,
    forwarded_for,
    host_name,
    new_uuid4,
    request_head,
    request_id,
    response_tokens,
)

H = list[tuple[bytes, bytes]]


def test_analyse_collects_what_routing_needs() -> None:
    info = analyse(
        [
            (b"Host", b"demo.example.test"),
            (b"X-Request-Id", b"abc"),
            (b"X-Forwarded-For", b"1.1.1.1"),
            (b"x-forwarded-for", b"2.2.2.2"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"Transfer-Encoding", b"Chunked"),
            (b"Expect", b"100-Continue"),
            (b"Upgrade", b"websocket"),
        ]
    )
    assert info.host == b"demo.example.test"
    assert info.request_id == b"abc"
    assert info.forwarded_for == [b"1.1.1.1", b"2.2.2.2"]
    assert info.drop == {b"x-hop"}
    assert info.chunked and info.has_body and info.expect_continue
    assert info.upgrade == b"websocket"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"Transfer-Encoding", b"gzip, chunked")], 501),
        ([(b"Transfer-Encoding", b"identity")], 501),
        ([(b"Host", b"a"), (b"host", b"b")], 400),
        ([(b"Host", b"a b")], 400),
        ([(b"Host", b"a,b")], 400),
        ([(b"Host", b"")], 400),
    ],
)
def test_analyse_refuses(headers: H, status: int) -> None:
    with pytest.raises(BadRequest) as exc:
        analyse(headers)
    assert exc.value.status == status


def test_request_head_strips_hop_by_hop_and_adds_router_headers() -> None:
    headers = [
        (b"Host", b"demo.example.test"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-T"),
        (b"Upgrade", b"h2c"),
        (b"X-Forwarded-For", b"9.9.9.9"),
        (b"X-Request-Id", b"client-id"),
        (b"Via", b"1.1 other"),
        (b"Content-Length", b"3"),
        (b"Accept", b"*/*"),
    ]
    info = analyse(headers)
    head = request_head(
        b"POST", b"/p?q=1", headers, info, [b"X-Forwarded-For: 9.9.9.9, 1.2.3.4"], upgrade=False
    )
    text = head.decode()
    assert text.startswith("POST /p?q=1 HTTP/1.1\r\n")
    assert text.endswith("\r\n\r\n")
    lower = text.lower()
    for gone in (
        "connection:",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te:",
        "trailer:",
        "upgrade:",
        "client-id",
        "1.1 other",
    ):
        assert gone not in lower, gone
    assert "Host: demo.example.test\r\n" in text
    assert "Content-Length: 3\r\n" in text
    assert "Accept: */*\r\n" in text
    assert text.count("X-Forwarded-For") == 1
    assert "X-Forwarded-For: 9.9.9.9, 1.2.3.4\r\n" in text


def test_request_head_keeps_upgrade_for_websockets_and_rechunks() -> None:
    headers = [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    head = request_head(b"GET", b"/ws", headers, analyse(headers), [], upgrade=True).decode()
    assert "Connection: Upgrade\r\nUpgrade: websocket\r\n" in head
    chunked = [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")]
    head = request_head(b"POST", b"/", chunked, analyse(chunked), [], upgrade=False).decode()
    assert head.count("Transfer-Encoding: chunked") == 1


def test_request_id_kept_when_valid() -> None:
    good = b"a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    assert request_id(good) == good
    assert request_id(b"A" * 200) == b"A" * 200
    for bad in (None, b"short", b"A" * 201, b"has space in the middle of it", b"\xff" * 30):
        got = request_id(bad)
        assert got != bad
        assert uuid.UUID(got.decode()).version == 4


def test_new_uuid4_is_a_version_4_uuid() -> None:
    ids = {new_uuid4() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        parsed = uuid.UUID(value.decode())
        assert parsed.version == 4 and str(parsed).encode() == value


def test_forwarded_for_appends() -> None:
    assert forwarded_for([], "1.2.3.4") == b"1.2.3.4"
    assert forwarded_for([b" 9.9.9.9 ", b"8.8.8.8"], "1.2.3.4") == b"9.9.9.9, 8.8.8.8, 1.2.3.4"


def test_host_name() -> None:
    assert host_name(b"Demo.Example.Test:8080") == "demo.example.test"
    assert host_name(b"demo.example.test.") == "demo.example.test"
    assert host_name(b"[::1]:80") == "[::1]"


def test_response_tokens() -> None:
    assert response_tokens([(b"Connection", b"close, X-Private"), (b"X-Private", b"1")]) == {
        b"x-private"
    }
    assert response_tokens([(b"Content-Type", b"text/plain")]) == set()
