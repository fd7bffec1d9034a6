"""HTTPS certificates for the routers' edge: the record kept in etcd under
``routes/certs/{hostname}`` and the checks a pair passes before it is used.

The record is JSON ``{"chain": PEM, "key_sealed": SEALED}``: the certificate
chain (leaf first) and its private key sealed with the cluster key
(slipway.sealing), for one host name or a ``*.domain`` wildcard. An operator
may write ``"key": PEM`` instead (unsealed); the controller never does.
``"made_here": true`` marks one the controller made from the cluster CA
(controller/loops/edge_certs.py), ``"cert": NAME`` one that is an app's
uploaded certificate (controller/store/domains.py). Routers read it (they
may read ``routes/`` only); dynos cannot reach etcd at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from slipway import errors
from slipway.sealing import Sealer

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Pair:
    chain: bytes
    key: bytes
    # Made by the controller from the cluster CA (it renews and removes those only).
    made_here: bool = False
    # The app certificate (certs:add) this record serves, "" for any other.
    cert: str = ""


def check(chain: bytes, key: bytes) -> x509.Certificate:
    """The leaf certificate of ``chain``, if ``key`` is its private key;
    InvalidArgument saying what is wrong otherwise."""
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise errors.InvalidArgument(f"the certificate chain is not PEM: {exc}") from exc
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise errors.InvalidArgument(
            f"the private key is not an unencrypted PEM key: {exc}"
        ) from exc
    leaf = certificates[0]
    if leaf.public_key().public_bytes(*_SPKI) != private.public_key().public_bytes(*_SPKI):
        raise errors.InvalidArgument("the private key does not belong to the certificate")
    return leaf


def encode(pair: Pair, sealer: Sealer | None) -> bytes:
    """The record of ``pair``, its key sealed with ``sealer`` (None: in the clear,
    for an insecure cluster that has no cluster key)."""
    record: dict[str, object] = {"chain": pair.chain.decode()}
    if sealer is None:
        record["key"] = pair.key.decode()
    else:
        record["key_sealed"] = sealer.seal(pair.key)
    if pair.made_here:
        record["made_here"] = True
    if pair.cert:
        record["cert"] = pair.cert
    return json.dumps(record).encode()


def decode(value: bytes, sealer: Sealer | None) -> Pair:
    """A record as stored, checked (InvalidArgument if it is not a usable pair)."""
    return read(value, sealer)[0]


def read(value: bytes, sealer: Sealer | None) -> tuple[Pair, x509.Certificate]:
    """A record as stored and its leaf certificate, checked as :func:`decode` does."""
    try:
        obj = json.loads(value)
        chain = str(obj["chain"]).encode()
        sealed = obj.get("key_sealed")
        plain = obj.get("key")
        made_here, cert = bool(obj.get("made_here")), str(obj.get("cert") or "")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise errors.InvalidArgument(f"not a certificate record: {exc}") from exc
    if isinstance(sealed, str):
        if sealer is None:
            raise errors.InvalidArgument("its key is sealed and this process has no cluster key")
        key = sealer.open(sealed)
    elif isinstance(plain, str):
        key = plain.encode()
    else:
        raise errors.InvalidArgument("not a certificate record: it holds no key")
    pair = Pair(chain, key, made_here, cert)
    return pair, check(pair.chain, pair.key)


def served_upload(value: bytes) -> tuple[str, str]:
    """The uploaded certificate a stored record serves, as (name, chain PEM);
    name "" for a record that is not an upload's (or not a record)."""
    try:
        obj = json.loads(value)
        return str(obj.get("cert") or ""), str(obj.get("chain") or "")
    except (ValueError, AttributeError):
        return "", ""
