"""Router configuration: one frozen dataclass holding every number the router uses.

Defaults follow Heroku's published behaviour (see ``shared/BRIEF.md``); tests
build a :class:`RouterConfig` with shrunk timeouts instead of sleeping for real.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from slipway.pki import Bundle


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        """``"0.0.0.0:8080"``, ``":8080"``, ``"8080"`` or ``"[::1]:8080"``."""
        text = text.strip()
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = "", text
        host = host.strip("[]") or "0.0.0.0"
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"bad listen address {text!r}: port is not a number") from None
        if not 0 <= number <= 65535:
            raise ValueError(f"bad listen address {text!r}: port out of range")
        return cls(host, number)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Limits:
    """Routing numbers (Heroku's unless said otherwise)."""

    # Connecting to a dyno: refused or not connected within this -> quarantine + retry.
    connect_timeout: float = 5.0
    quarantine: float = 5.0
    max_attempts: int = 10
    # Time from the request reaching the dyno to the first response byte (H12).
    first_byte_timeout: float = 30.0
    # Rolling idle window once the response started, or while the client
    # sends its body (H15 dyno side, H28 client side).
    idle_timeout: float = 55.0
    # Per dyno on this router; beyond it requests wait in the app backlog.
    max_inflight_per_dyno: int = 50
    # The app backlog holds backlog_per_dyno x web dynos waiting requests; beyond: H11.
    backlog_per_dyno: int = 50
    # Request line and each header line; larger -> 400 before any dyno is touched.
    max_line_bytes: int = 8 * 1024
    # The whole request head; bounds memory spent on a client that never ends its head.
    max_head_bytes: int = 64 * 1024
    # How long a client keep-alive connection may sit between requests.
    client_keepalive_timeout: float = 55.0
    # Pooled connections to dynos are dropped after this much idleness: shorter
    # than common app servers' keep-alive (gunicorn 2 s, Node 5 s, puma 20 s),
    # so the router is normally the side that closes an idle connection.
    upstream_idle_timeout: float = 1.5
    # Idle pooled connections kept per dyno.
    upstream_pool_size: int = 64
    # Body bytes buffered for a request whose dyno is not connected yet, or for
    # pipelined requests; past this the client socket stops being read.
    max_buffered_body: int = 256 * 1024
    # A request to an app whose web dynos are all still starting is held this
    # long for the first one to come up, then answered H20 (Heroku: 75 s).
    boot_timeout: float = 75.0
    # How often deadlines are checked; each timeout fires at most this late.
    tick: float = 0.25


@dataclass(frozen=True)
class LogConfig:
    """Router log shipping to NATS."""

    servers: tuple[str, ...] = ()
    # Lines waiting to be published; beyond this the oldest are counted and dropped.
    # At 50,000 requests a second that is 4 s of NATS being away (about 35 MB).
    queue_size: int = 200_000
    # How often the data plane's lines are collected and published (one message per app).
    flush_interval: float = 0.05


@dataclass(frozen=True)
class RouterConfig:
    listen: tuple[Listen, ...] = (Listen("0.0.0.0", 8080),)
    workers: int = 1
    etcd_endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    etcd_prefix: str = "/slipway"
    base_domain: str = "localhost"
    # Reported as X-Forwarded-Proto; TLS is terminated in front of the router.
    forwarded_proto: str = "http"
    metrics_listen: Listen | None = None
    # HTTPS listeners (TLS ends here; dynos see X-Forwarded-Proto: https).
    listen_tls: tuple[Listen, ...] = ()
    # The default certificate (PEM chain and key files): served for every name
    # that has no certificate of its own. Required with listen_tls.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    limits: Limits = field(default_factory=Limits)
    logs: LogConfig = field(default_factory=LogConfig)
    # etcd reconnect backoff bounds (seconds).
    etcd_backoff_initial: float = 0.2
    etcd_backoff_max: float = 5.0
    # A full re-list this often heals anything a watch might have missed.
    resync_interval: float = 300.0
    # The router's certificate bundle (slipway.pki): read-only on routes in etcd,
    # publish-only for router log lines on NATS. None only with --insecure.
    credentials: Bundle | None = None

    def with_limits(self, **changes: float | int) -> RouterConfig:
        return replace(self, limits=replace(self.limits, **changes))  # type: ignore[arg-type]
