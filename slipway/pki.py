"""The cluster CA and the certificates every component proves itself with.

One EC P-256 CA signs one certificate per component. Each certificate serves
both ends of TLS (serverAuth and clientAuth) and names its holder three ways,
one for each engine that reads it:

    subject CN      the etcd user (etcd's --client-cert-auth maps CN -> user):
                    ``root``, ``controller``, ``router``, ``builder``, ``node.NAME``
    email SAN       ``ROLE@slipway`` -- the NATS user (nats-server's
                    ``verify_and_map`` maps an email SAN to a user), one per role
    OU              the role, for our own checks and for ``slipway nodes``

A component's credentials live in one directory (:class:`Bundle`):
``ca.crt``, ``tls.crt`` and ``tls.key`` (0600). The CA directory holds
``ca.crt`` and ``ca.key`` (0600); only controllers that admit nodes need the key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slipway import errors, sealing

CA_DAYS = 3650
CERT_DAYS = 365
EMAIL_DOMAIN = "slipway"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class Role(StrEnum):
    ROOT = "root"  # operators' tools: seal etcd, create tokens, back up
    CONTROLLER = "controller"
    NODE = "node"
    ROUTER = "router"
    BUILDER = "builder"
    ENGINE = "engine"  # etcd and nats-server themselves
    ADDONS = "addons"  # the built-in add-on providers: no etcd user; on NATS their backups only


def common_name(role: Role, name: str = "") -> str:
    """The etcd user of a certificate: one per node, one per other role."""
    if role is Role.NODE:
        if not name:
            raise errors.InvalidArgument("a node certificate needs the node's name")
        return f"node.{name}"
    return role.value


def nats_user(role: Role) -> str:
    return f"{role.value}@{EMAIL_DOMAIN}"


@dataclass(frozen=True)
class Bundle:
    """A component's credentials directory."""

    path: Path

    @property
    def ca_file(self) -> Path:
        return self.path / "ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.path / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.path / "tls.key"

    @property
    def cluster_key_file(self) -> Path:
        return self.path / sealing.KEY_FILE

    def sealer(self) -> sealing.Sealer | None:
        """The cluster key this bundle holds (controllers' and routers'), else None."""
        return sealing.load(self.cluster_key_file) if self.cluster_key_file.exists() else None

    def exists(self) -> bool:
        return self.ca_file.is_file() and self.cert_file.is_file() and self.key_file.is_file()

    def check(self) -> Bundle:
        missing = [p.name for p in (self.ca_file, self.cert_file, self.key_file) if not p.is_file()]
        if missing:
            raise errors.FailedPrecondition(
                f"credentials directory {self.path} lacks {', '.join(missing)}; issue them with "
                "`slipway-controller certs issue` (or `slipway-agent join` on a node)",
                reason="no_credentials",
            )
        return self

    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    def key_pem(self) -> bytes:
        return self.key_file.read_bytes()

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem())

    def identity(self) -> Identity:
        return identity_of(self.certificate())


@dataclass(frozen=True)
class Identity:
    role: Role
    common_name: str
    not_after: datetime.datetime

    @property
    def node(self) -> str:
        """The node's name for a node certificate, else empty."""
        return self.common_name.removeprefix("node.") if self.role is Role.NODE else ""


def identity_of(cert: x509.Certificate) -> Identity:
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        role = Role(str(ous[0].value))
    except (IndexError, ValueError) as exc:
        raise errors.Unauthenticated(
            "certificate names no Slipway role", reason="bad_certificate"
        ) from exc
    return Identity(role, str(cns[0].value) if cns else "", cert.not_valid_after_utc)


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    # The cluster key (slipway.sealing) kept beside the CA, base64 as in its file.
    cluster_key: bytes = b""

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sealer(self) -> sealing.Sealer:
        return sealing.parse(self.cluster_key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(directory: Path, *, common: str = "Slipway cluster CA") -> CA:
    """Create ``ca.crt`` and ``ca.key`` in ``directory``; refuses to replace a CA."""
    if (directory / "ca.key").exists() or (directory / "ca.crt").exists():
        raise errors.AlreadyExists(
            f"{directory} already holds a CA; every certificate it signed depends on it",
            reason="ca_exists",
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Slipway"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(directory / "ca.key", _key_pem(key))
    _write_public(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return CA(cert, key, _cluster_key(directory))


def load_ca(directory: Path) -> CA:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise errors.FailedPrecondition(
            f"no CA in {directory}; create one with `slipway-controller ca init --dir {directory}`",
            reason="no_ca",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise errors.FailedPrecondition(f"{directory}/ca.key is not an EC key")
    return CA(cert, key, _cluster_key(directory))


def _cluster_key(directory: Path) -> bytes:
    """The cluster key beside the CA, made now for a CA made before keys were."""
    path = directory / sealing.KEY_FILE
    if not path.exists():
        write_private(path, sealing.encode_key(sealing.new_key()))
    return path.read_bytes()


# The roles that open sealed certificate keys: controllers seal and read them,
# routers serve them.
CLUSTER_KEY_ROLES = frozenset({Role.CONTROLLER, Role.ROUTER})


def give_cluster_key(ca: CA, bundle: Bundle) -> None:
    """Copy the cluster key into a controller's or router's bundle (if it lacks it)."""
    path = bundle.cluster_key_file
    if not path.exists() or path.read_bytes() != ca.cluster_key:
        write_private(path, ca.cluster_key)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise errors.InvalidArgument(
            f"invalid name {name!r}: use 1-63 lowercase letters, digits and dashes, "
            "starting with a letter or digit",
            reason="invalid_name",
        )
    return name


def _sans(role: Role, hosts: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = [x509.RFC822Name(nats_user(role))]
    for host in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def sign(
    ca: CA,
    public_key: ec.EllipticCurvePublicKey,
    role: Role,
    *,
    name: str = "",
    hosts: Sequence[str] = (),
    days: int = CERT_DAYS,
) -> x509.Certificate:
    """A certificate for ``role`` (``name`` is the node for NODE), valid for ``hosts``."""
    if role is Role.NODE:
        check_name(name)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Slipway"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name(role, name)),
        ]
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _certificate(ca, public_key, subject, _sans(role, hosts), usages, days)


def _certificate(
    ca: CA,
    public_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )


def edge_certificate(ca: CA, hosts: Sequence[str], *, days: int = CERT_DAYS) -> tuple[bytes, bytes]:
    """A certificate for the routers' HTTPS listeners, for ``hosts`` (names or
    ``*.domain`` wildcards), signed by the cluster CA: (chain PEM, key PEM). Not
    an identity inside the cluster: it only serves app traffic."""
    if not hosts:
        raise errors.InvalidArgument("an edge certificate names at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Slipway"),
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys(hosts)]
    cert = _certificate(
        ca, key.public_key(), subject, sans, [ExtendedKeyUsageOID.SERVER_AUTH], days
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


DEFAULT_HOSTS = ("localhost", "127.0.0.1")


def issue(
    ca: CA,
    out: Path,
    role: Role,
    *,
    name: str = "",
    hosts: Sequence[str] = (),
    days: int = CERT_DAYS,
) -> Bundle:
    """Write a new key and certificate (and the CA's certificate) into ``out``.

    Re-issuing into an existing directory replaces the key and certificate
    (rotation); the daemons read them again when they restart.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign(ca, key.public_key(), role, name=name, hosts=[*DEFAULT_HOSTS, *hosts], days=days)
    bundle = Bundle(out)
    write_private(bundle.key_file, _key_pem(key))
    _write_public(bundle.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    _write_public(bundle.ca_file, ca.cert_pem)
    if role in CLUSTER_KEY_ROLES:
        give_cluster_key(ca, bundle)
    return bundle


def new_key_and_csr(common: str) -> tuple[bytes, bytes]:
    """A private key (PEM) and a CSR for it, for a node asking to join."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def sign_csr(
    ca: CA, csr_pem: bytes, role: Role, *, name: str = "", hosts: Sequence[str] = ()
) -> bytes:
    """Sign a CSR's key for ``role``; the subject and SANs are ours, not the CSR's."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise errors.InvalidArgument(f"malformed certificate request: {exc}") from exc
    if not csr.is_signature_valid:
        raise errors.InvalidArgument("the certificate request's signature is invalid")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise errors.InvalidArgument("the certificate request must carry an EC P-256 key")
    cert = sign(ca, public_key, role, name=name, hosts=[*DEFAULT_HOSTS, *hosts])
    return cert.public_bytes(serialization.Encoding.PEM)


def write_bundle(out: Path, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> Bundle:
    bundle = Bundle(out)
    write_private(bundle.key_file, key_pem)
    _write_public(bundle.cert_file, cert_pem)
    _write_public(bundle.ca_file, ca_pem)
    return bundle


def days_left(not_after: datetime.datetime, now: datetime.datetime | None = None) -> float:
    return (not_after - (now or _now())).total_seconds() / 86400.0


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate's subject alternative names hold."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in sans.get_values_for_type(x509.DNSName)]
