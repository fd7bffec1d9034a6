"""Custom domains and uploaded certificates, the pure part: host names, the
records, what a certificate covers, and which certificate each domain gets.

An app answers at ``APP.BASE_DOMAIN`` and at every custom domain it adds
(``domains:add``): an exact host name or a ``*.domain`` wildcard, held by one
app only. A certificate the app uploads (``certs:add``) is served for each of
its domains the certificate covers; :func:`assign` picks, per domain, the
newest valid certificate that covers it, and :func:`edge_plan` turns that
into the ``routes/certs/`` records to write and delete (controller/store/domains.py
applies it).
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from slipway import certs, errors, pki

MAX_HOSTNAME = 253
MAX_DOMAINS_PER_APP = 1000  # Heroku's limit on custom domains per app
MAX_CERTS_PER_APP = 20
MAX_CERT_BYTES = 64 * 1024  # a chain of a few certificates is some 5 KB
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def hostname(value: str, base_domain: str) -> str:
    """A custom domain as stored: lower case, no trailing dot, ``*.`` only as its
    first label; InvalidArgument saying what is wrong otherwise."""
    name = value.strip().rstrip(".").lower()
    if not name:
        raise errors.InvalidArgument("give a host name, such as www.example.com")
    if not name.isascii():
        try:
            name = name.encode("idna").decode()
        except UnicodeError as exc:
            raise errors.InvalidArgument(f"{value!r} is not a valid host name: {exc}") from exc
    if len(name) > MAX_HOSTNAME:
        raise errors.InvalidArgument(f"a host name has at most {MAX_HOSTNAME} characters")
    labels = name.split(".")
    wildcard = labels[0] == "*"
    rest = labels[1:] if wildcard else labels
    if len(rest) < 2:
        raise errors.InvalidArgument(
            f"{value!r} is not a full host name: give one such as www.example.com"
            + (" (a wildcard covers names under a domain: *.example.com)" if wildcard else "")
        )
    for label in rest:
        if not _LABEL.match(label):
            raise errors.InvalidArgument(
                f"{value!r} is not a valid host name: {label!r} is not a label of letters, "
                "digits and inner hyphens (a wildcard is `*.` at the start only)"
            )
    if rest[-1].isdigit():
        raise errors.InvalidArgument(f"{value!r} is an IP address; custom domains are names")
    base = base_domain.strip(".").lower()
    if name == base or name.endswith("." + base):
        raise errors.InvalidArgument(
            f"{name} is under the platform's own domain {base}, where every app already "
            f"answers as APP.{base}",
            reason="platform_domain",
        )
    return name


def covers(names: Iterable[str], host: str) -> bool:
    """Whether a certificate for ``names`` (its DNS names) is valid for ``host``:
    the same name, or a wildcard one label up (``*.example.com`` covers
    ``www.example.com`` and the domain ``*.example.com``, not ``example.com``)."""
    host = host.lower()
    parent = host.partition(".")[2]
    for name in names:
        name = name.lower()
        if name == host or (name.startswith("*.") and name[2:] == parent and parent):
            return True
    return False


@dataclass(frozen=True)
class DomainRecord:
    hostname: str
    app: str
    id: str
    created_at: float

    @classmethod
    def new(cls, app: str, hostname: str, now: float) -> DomainRecord:
        return cls(hostname=hostname, app=app, id=str(uuid.uuid4()), created_at=now)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, value: bytes) -> DomainRecord:
        obj = json.loads(value)
        return cls(
            hostname=str(obj["hostname"]),
            app=str(obj["app"]),
            id=str(obj["id"]),
            created_at=float(obj["created_at"]),
        )


@dataclass(frozen=True)
class Leaf:
    """What users see of a certificate, read from its leaf."""

    names: tuple[str, ...]
    subject: str
    issuer: str
    not_before: float
    not_after: float
    self_signed: bool

    @classmethod
    def of(cls, leaf: x509.Certificate) -> Leaf:
        return cls(
            names=tuple(pki.dns_names(leaf)),
            subject=leaf.subject.rfc4514_string(),
            issuer=leaf.issuer.rfc4514_string(),
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=leaf.not_valid_after_utc.timestamp(),
            self_signed=leaf.issuer == leaf.subject,
        )


@dataclass(frozen=True)
class CertRecord:
    """An uploaded certificate: its chain and its private key, sealed."""

    name: str
    app: str
    chain: str
    key_sealed: str
    created_at: float
    leaf: Leaf = field(compare=False)
    # Obtained over ACME by the leader (certs:auto), not uploaded.
    auto: bool = False

    def encode(self) -> bytes:
        record = {
            "name": self.name,
            "app": self.app,
            "chain": self.chain,
            "key_sealed": self.key_sealed,
            "created_at": self.created_at,
            "auto": self.auto,
        }
        return json.dumps(record).encode()

    @classmethod
    def decode(cls, value: bytes) -> CertRecord:
        obj = json.loads(value)
        chain = str(obj["chain"])
        return cls(
            name=str(obj["name"]),
            app=str(obj["app"]),
            chain=chain,
            key_sealed=str(obj["key_sealed"]),
            created_at=float(obj["created_at"]),
            leaf=Leaf.of(x509.load_pem_x509_certificates(chain.encode())[0]),
            auto=bool(obj.get("auto", False)),
        )


def check_upload(chain: bytes, key: bytes, now: float) -> Leaf:
    """An uploaded chain and key, checked as ``certs:add`` promises: PEM, the key
    is the leaf's, each certificate signed by the next, valid now."""
    if len(chain) > MAX_CERT_BYTES or len(key) > MAX_CERT_BYTES:
        raise errors.InvalidArgument(
            f"a certificate chain or key has at most {MAX_CERT_BYTES // 1024} KiB"
        )
    leaf = certs.check(chain, key)
    chain_certs = x509.load_pem_x509_certificates(chain)
    for n, (child, parent) in enumerate(itertools.pairwise(chain_certs)):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise errors.InvalidArgument(
                f"the chain is broken: certificate {n + 1} ({child.subject.rfc4514_string()}) "
                f"is not signed by the one after it ({parent.subject.rfc4514_string()}); "
                "give the leaf first, then each intermediate in order"
            ) from exc
    shown = Leaf.of(leaf)
    if shown.not_after <= now:
        ended = datetime.datetime.fromtimestamp(shown.not_after, datetime.UTC)
        raise errors.InvalidArgument(f"the certificate expired on {ended:%Y-%m-%d %H:%M} UTC")
    if shown.not_before > now:
        begins = datetime.datetime.fromtimestamp(shown.not_before, datetime.UTC)
        raise errors.InvalidArgument(f"the certificate is not valid before {begins:%Y-%m-%d} UTC")
    if not shown.names:
        raise errors.InvalidArgument("the certificate names no DNS host (subjectAltName)")
    return shown


def auto_cert_name(host: str) -> str:
    """The name of a domain's ACME certificate: acme-www-example-com."""
    return "acme-" + _slug(host)


def _slug(host: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", host.lower().replace("*", "star")).strip("-")[:40]


def cert_name(leaf: Leaf, taken: Iterable[str]) -> str:
    """A name for an uploaded certificate, from its first host: www-example-com."""
    base = _slug(leaf.names[0]) or "cert"
    if base.startswith("acme-"):
        base = "cert-" + base  # acme-* names are the automated certificates'

    used = set(taken)
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}-{n}"
    return name


def assign(
    domains: Iterable[str], uploaded: Iterable[CertRecord], now: float
) -> dict[str, CertRecord]:
    """Each domain's certificate: the newest uploaded one, still valid, covering it."""
    usable = sorted(
        (c for c in uploaded if c.leaf.not_after > now),
        key=lambda c: (c.created_at, c.name),
        reverse=True,
    )
    out: dict[str, CertRecord] = {}
    for host in domains:
        for cert in usable:
            if covers(cert.leaf.names, host):
                out[host] = cert
                break
    return out


@dataclass
class EdgePlan:
    """routes/certs/ records to write (host -> certificate) and to delete."""

    put: dict[str, CertRecord] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)


def edge_plan(
    domains: Iterable[str],
    uploaded: Iterable[CertRecord],
    served: Mapping[str, tuple[str, str]],
    now: float,
) -> EdgePlan:
    """From the app's domains and certificates, and what ``routes/certs/`` serves
    for its domains now (host -> (certificate name, chain); name "" for a record
    not from an upload), what to change. Records that are not an upload's are
    left alone unless an upload now covers their host."""
    wanted = assign(domains, uploaded, now)
    out = EdgePlan()
    for host, cert in sorted(wanted.items()):
        if served.get(host) != (cert.name, cert.chain):
            out.put[host] = cert
    out.delete = sorted(h for h, (name, _) in served.items() if name and h not in wanted)
    return out
