"""Password digests: scrypt (OpenSSL's, through hashlib), a random salt each.

The stored form names its parameters, so they can be raised later without
breaking the digests already stored: ``scrypt$N$r$p$salt$digest`` (base64).
scrypt with N=2**15, r=8 costs 32 MB and about a tenth of a second per
check, which is what makes guessing slow; callers run it off the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024
MIN_LENGTH = 8
MAX_LENGTH = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def check_new(password: str) -> None:
    """Raise ValueError with the reason a new password is not taken."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"a password may have at most {MAX_LENGTH} characters")


def digest(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def verify(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for anything else,
    including an account without a password (``stored`` empty)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)
