"""HTTPS certificates for the routers' edge: the record kept in etcd under
``routes/certs/{hostname}`` and the checks a pair passes before it is used.

The record is JSON ``{"chain": PEM, "key": PEM}``: the certificate chain
(leaf first) and its private key, for one host name or a ``*.domain``
wildcard; ``"made_here": true`` marks one the controller made from the
cluster CA (controller/loops/edge_certs.py). Routers read it (they may read
``routes/`` only); dynos cannot reach etcd at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from slipway import errors

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Pair:
    chain: bytes
    key: bytes
    # Made by the controller from the cluster CA (it renews and removes those only).
    made_here: bool = False


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


def encode(pair: Pair) -> bytes:
    record: dict[str, object] = {"chain": pair.chain.decode(), "key": pair.key.decode()}
    if pair.made_here:
        record["made_here"] = True
    return json.dumps(record).encode()


def decode(value: bytes) -> Pair:
    """A record as stored, checked (InvalidArgument if it is not a usable pair)."""
    return read(value)[0]


def read(value: bytes) -> tuple[Pair, x509.Certificate]:
    """A record as stored and its leaf certificate, checked as :func:`decode` does."""
    try:
        obj = json.loads(value)
        pair = Pair(
            str(obj["chain"]).encode(), str(obj["key"]).encode(), bool(obj.get("made_here"))
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.InvalidArgument(f"not a certificate record: {exc}") from exc
    return pair, check(pair.chain, pair.key)
