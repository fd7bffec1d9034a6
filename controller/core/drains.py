"""Log drains, the pure part: drain URLs, the record, and the wire formats.

A drain sends every line of one app's log to a syslog server or an HTTPS
endpoint, as Heroku's do:

    syslog://HOST:PORT        RFC 5424 over TCP, octet-counting framing (RFC 6587)
    syslog+tls://HOST:PORT    the same over TLS
    https://[USER:PASS@]HOST[:PORT]/PATH   batched POSTs, ``application/logplex-1``
                              (frames as in syslog, ``Logplex-*`` headers, Basic
                              auth from the URL)

Every message carries the drain's token (``d.<uuid>``) as its syslog HOSTNAME,
so a receiver shared by many drains tells them apart.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from slipway import errors
from slipway.logline import LogLine

SCHEMES = ("syslog", "syslog+tls", "https")
DEFAULT_PORTS = {"syslog": 514, "syslog+tls": 6514, "https": 443}
MAX_URL = 2048
MAX_DRAINS_PER_APP = 5  # Heroku's limit on drains per app
# local7 (23) x 8 + info (6): what Heroku's logplex sends for every line.
PRIORITY = 190


@dataclass(frozen=True)
class DrainURL:
    scheme: str
    host: str
    port: int
    path: str = "/"
    user: str = ""
    password: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme in ("syslog+tls", "https")

    @property
    def http(self) -> bool:
        return self.scheme == "https"

    def authorization(self) -> str:
        if not (self.user or self.password):
            return ""
        pair = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def parse_url(url: str) -> DrainURL:
    """Check a drain URL, with a sentence saying what is wrong if it is not usable."""
    if not url or len(url) > MAX_URL:
        raise errors.InvalidArgument(f"give a drain URL of at most {MAX_URL} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise errors.InvalidArgument(f"{url!r} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise errors.InvalidArgument(
            f"drain URLs start with {', '.join(s + '://' for s in SCHEMES)}; not {url!r}"
        )
    if not parts.hostname:
        raise errors.InvalidArgument(f"{url!r} names no host")
    if scheme != "https" and (parts.path not in ("", "/") or parts.query or parts.username):
        raise errors.InvalidArgument(f"a {scheme} drain is HOST:PORT only; not {url!r}")
    return DrainURL(
        scheme=scheme,
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        user=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
    )


def shown_url(url: str) -> str:
    """The URL as the API shows it: a password in it is replaced by ``*****``."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username}:*****@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class DrainRecord:
    id: str
    app: str
    url: str
    token: str
    created_at: float
    # The LOGS stream sequence the drain starts after: lines logged before the
    # drain was added are not sent.
    start_after: int = 0

    @classmethod
    def new(cls, app: str, url: str, start_after: int, now: float | None = None) -> DrainRecord:
        parse_url(url)
        return cls(
            id=uuid.uuid4().hex,
            app=app,
            url=url,
            token=f"d.{uuid.uuid4()}",
            created_at=time.time() if now is None else now,
            start_after=start_after,
        )

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> DrainRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})

    @property
    def consumer(self) -> str:
        """The durable JetStream consumer that remembers how far the drain got."""
        return f"drain-{self.id}"


def syslog_message(line: LogLine, token: str) -> bytes:
    """One RFC 5424 message: ``<190>1 TIMESTAMP TOKEN SOURCE PROCESS - - MESSAGE``."""
    stamp = datetime.fromtimestamp(line.ts, UTC).isoformat(timespec="microseconds")
    stamp = stamp.replace("+00:00", "Z")
    # APP-NAME and PROCID are printable US-ASCII without spaces (at most 48 and 128).
    source = _token(line.source, 48)
    process = _token(line.process, 128)
    return f"<{PRIORITY}>1 {stamp} {token} {source} {process} - - {line.message}".encode()


def _token(text: str, limit: int) -> str:
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return cleaned or "-"


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``LEN SP MESSAGE``."""
    return b"%d %s" % (len(message), message)


def logplex_body(lines: list[LogLine], token: str) -> bytes:
    return b"".join(octet_frame(syslog_message(line, token)) for line in lines)


def l10_line(app: str, dropped: int, since: float) -> LogLine:
    """Heroku's logplex error for a drain that could not keep up."""
    stamp = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
    text = f"Error L10 (output buffer overflow): drain dropped {dropped} messages since {stamp}"
    return LogLine(app, "heroku", "logplex", text, time.time())


def claims(drains: list[str], owners: dict[str, str], me: str, members: int) -> list[str]:
    """Which unowned drains this pool member takes: its fair share, oldest id first.

    ``owners`` maps drain id to owner; ``members`` is how many pool members are
    alive (at least 1). A member takes drains nobody owns until it owns
    ceil(drains / members); a share left over by a dead member is taken by the
    survivors on their next pass.
    """
    share = -(-len(drains) // max(1, members))
    mine = sum(1 for d in drains if owners.get(d) == me)
    free = sorted(d for d in drains if d not in owners)
    return free[: max(0, share - mine)]
