"""Log drains, the pure part: URLs, what the API shows, wire formats, claims."""

from __future__ import annotations

import pytest

from controller.core import drains
from slipway import errors
from slipway.logline import LogLine


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path"),
    [
        ("syslog://logs.example.com:514", "syslog", "logs.example.com", 514, "/"),
        ("syslog://10.0.0.1", "syslog", "10.0.0.1", 514, "/"),
        ("syslog+tls://logs.example.com", "syslog+tls", "logs.example.com", 6514, "/"),
        ("https://u:p@in.example.com/drain?x=1", "https", "in.example.com", 443, "/drain?x=1"),
        ("HTTPS://in.example.com:8443", "https", "in.example.com", 8443, "/"),
    ],
)
def test_drain_urls(url: str, scheme: str, host: str, port: int, path: str) -> None:
    parsed = drains.parse_url(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.path) == (scheme, host, port, path)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "give a drain URL"),
        ("ftp://x", "drain URLs start with"),
        ("http://plain.example.com", "drain URLs start with"),
        ("syslog://", "names no host"),
        ("syslog://h:99999", "not a valid URL"),
        ("syslog://h:514/path", "HOST:PORT only"),
        ("https://" + "a" * 3000, "at most 2048"),
    ],
)
def test_bad_drain_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=says):
        drains.parse_url(url)


def test_basic_auth_comes_from_the_url_and_is_never_shown() -> None:
    parsed = drains.parse_url("https://ada:s%40cret@h.example.com/x")
    assert parsed.authorization() == "Basic YWRhOnNAY3JldA=="  # ada:s@cret
    assert drains.shown_url("https://ada:s%40cret@h.example.com:8443/x") == (
        "https://ada:*****@h.example.com:8443/x"
    )
    assert drains.shown_url("syslog://h:514") == "syslog://h:514"
    assert drains.parse_url("https://h.example.com").authorization() == ""


def test_syslog_message_and_octet_counting() -> None:
    line = LogLine("a", "app", "web.1", "hello wörld", ts=1764547200.5)
    message = drains.syslog_message(line, "d.123")
    assert message == "<190>1 2025-12-01T00:00:00.500000Z d.123 app web.1 - - hello wörld".encode()
    assert drains.octet_frame(message) == b"%d " % len(message) + message
    body = drains.logplex_body([line, line], "d.123")
    assert body == drains.octet_frame(message) * 2


def test_syslog_fields_never_carry_spaces() -> None:
    line = LogLine("a", "app", "web 1", "x", ts=0.0)
    assert b" app web_1 - - x" in drains.syslog_message(line, "d.1")


def test_records_round_trip_and_name_their_consumer() -> None:
    record = drains.DrainRecord.new("shop", "syslog://h:514", start_after=41, now=5.0)
    assert record.token.startswith("d.") and record.start_after == 41
    assert drains.DrainRecord.decode(record.encode()) == record
    assert record.consumer == f"drain-{record.id}"


def test_l10_line_counts_what_was_dropped() -> None:
    line = drains.l10_line("shop", 17, since=0.0)
    assert (line.source, line.process) == ("heroku", "logplex")
    assert line.message == (
        "Error L10 (output buffer overflow): drain dropped 17 messages since "
        "1970-01-01T00:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("all_drains", "owners", "members", "claimed"),
    [
        (["a", "b", "c", "d"], {}, 2, ["a", "b"]),  # a fair share: half of four
        (["a", "b", "c", "d"], {"a": "me", "b": "other"}, 2, ["c"]),
        (["a", "b", "c"], {"a": "me", "b": "me"}, 2, []),  # ceil(3/2) = 2 owned
        (["a", "b", "c"], {"a": "other", "b": "other"}, 1, ["c"]),  # a survivor alone
        (["a"], {}, 0, ["a"]),  # no member key seen yet: still serve
        ([], {}, 3, []),
    ],
)
def test_claims_take_a_fair_share_of_unowned_drains(
    all_drains: list[str], owners: dict[str, str], members: int, claimed: list[str]
) -> None:
    assert drains.claims(all_drains, owners, "me", members) == claimed
