"""The cluster key: private keys of HTTPS certificates are kept in etcd sealed
with it (AES-256-GCM), so an etcd backup or a stray read of ``routes/`` shows
no key a client could use.

The key is 32 random bytes in ``edge.key`` beside the cluster CA (made with
it, or on first use for a CA made before); ``slipway-controller certs issue``
copies it into controller and router bundles, the only roles that open
sealed keys. A sealed value reads ``v1.KEYID.BASE64`` where KEYID names the
key (so a router given another cluster's key says so instead of failing
obscurely) and BASE64 holds the nonce and the ciphertext.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from slipway import errors

KEY_FILE = "edge.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12
# Binds a sealed value to what it is: a sealed value of some other kind, if
# one is ever added, does not open as a certificate key.
_PURPOSE = b"slipway edge private key"


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise errors.InvalidArgument(
                f"the cluster key must be {_KEY_BYTES} bytes, not {len(key)}"
            )
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:12]

    def seal(self, plain: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain, _PURPOSE)
        return f"v1.{self.key_id}.{base64.b64encode(sealed).decode()}"

    def open(self, sealed: str) -> bytes:
        version, _, rest = sealed.partition(".")
        key_id, _, body = rest.partition(".")
        if version != "v1" or not body:
            raise errors.InvalidArgument("not a sealed value")
        if key_id != self.key_id:
            raise errors.InvalidArgument(
                f"sealed with cluster key {key_id}, not this process's {self.key_id}"
            )
        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _PURPOSE)
        except (ValueError, InvalidTag) as exc:
            raise errors.InvalidArgument("the sealed value is damaged") from exc


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=_KEY_BYTES * 8)


def encode_key(key: bytes) -> bytes:
    return base64.b64encode(key) + b"\n"


def parse(text: bytes, source: str = "the cluster key") -> Sealer:
    """A sealer from a key file's content (base64)."""
    try:
        return Sealer(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise errors.InvalidArgument(f"{source} is not a cluster key: {exc}") from exc


def load(path: Path) -> Sealer:
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise errors.FailedPrecondition(
            f"no cluster key at {path}; re-issue this component's credentials with "
            "`slipway-controller certs issue`",
            reason="no_cluster_key",
        ) from exc
    return parse(text, str(path))
