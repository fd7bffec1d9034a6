"""Automated certificates, the pure part: each domain's status record and the
plan of which domains the leader orders a certificate for now.

For every custom domain of an app with automated certificates on
(``certs:auto:enable``): a certificate is ordered when the domain has none
from ACME or its one ends within ``RENEW_BEFORE``; an order that fails is
tried again after a delay that doubles with each failure (``backoff``), and
the failure is shown by ``certs:auto`` until an order succeeds. Wildcard
domains cannot be validated over HTTP-01 (they need DNS-01): they are marked
failing once, with that reason, and not ordered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

RENEW_BEFORE = 30 * 86400.0
FIRST_RETRY = 60.0
MAX_RETRY = 6 * 3600.0

PENDING = "pending"  # ordering now, or waiting for the first order
ISSUED = "issued"
FAILING = "failing"

WILDCARD_REASON = (
    "a wildcard domain cannot be validated over HTTP-01 (it needs DNS-01); upload a "
    "certificate for it with certs:add"
)


@dataclass(frozen=True)
class AcmeStatus:
    hostname: str
    status: str = PENDING
    last_error: str = ""
    attempts: int = 0  # failures since the last success
    next_attempt: float = 0.0
    not_after: float = 0.0  # of the certificate issued last
    updated_at: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, value: bytes) -> AcmeStatus:
        obj = json.loads(value)
        return cls(
            hostname=str(obj["hostname"]),
            status=str(obj.get("status", PENDING)),
            last_error=str(obj.get("last_error", "")),
            attempts=int(obj.get("attempts", 0)),
            next_attempt=float(obj.get("next_attempt", 0.0)),
            not_after=float(obj.get("not_after", 0.0)),
            updated_at=float(obj.get("updated_at", 0.0)),
        )


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures in a row."""
    return float(min(MAX_RETRY, FIRST_RETRY * 2 ** max(0, attempts - 1)))


def failed(status: AcmeStatus, error: str, now: float) -> AcmeStatus:
    attempts = status.attempts + 1
    return AcmeStatus(
        hostname=status.hostname,
        status=FAILING,
        last_error=error,
        attempts=attempts,
        next_attempt=now + backoff(attempts),
        not_after=status.not_after,
        updated_at=now,
    )


def issued(hostname: str, not_after: float, now: float) -> AcmeStatus:
    return AcmeStatus(hostname=hostname, status=ISSUED, not_after=not_after, updated_at=now)


@dataclass
class AcmePlan:
    # (app, host) to order a certificate for, in this order.
    order: list[tuple[str, str]] = field(default_factory=list)
    # (app, host) to mark failing without an order (wildcards).
    refuse: list[tuple[str, str]] = field(default_factory=list)
    # (app, host) status records of domains no longer automated: deleted.
    forget: list[tuple[str, str]] = field(default_factory=list)


def plan(
    domains: Mapping[str, Iterable[str]],
    held: Mapping[tuple[str, str], float],
    statuses: Mapping[tuple[str, str], AcmeStatus],
    now: float,
    *,
    renew_before: float = RENEW_BEFORE,
) -> AcmePlan:
    """``domains``: each app with automated certificates on -> its custom domains;
    ``held``: (app, host) -> the end of the ACME certificate it has; ``statuses``:
    every status record found."""
    out = AcmePlan()
    wanted: set[tuple[str, str]] = set()
    for app in sorted(domains):
        for host in sorted(domains[app]):
            key = (app, host)
            wanted.add(key)
            status = statuses.get(key)
            if host.startswith("*."):
                if status is None or status.last_error != WILDCARD_REASON:
                    out.refuse.append(key)
                continue
            ends = held.get(key)
            if ends is not None and ends - now >= renew_before:
                continue  # a certificate that is not due yet
            if status is not None and status.status == FAILING and status.next_attempt > now:
                continue  # backing off
            out.order.append(key)
    out.forget = sorted(k for k in statuses if k not in wanted)
    return out
