"""An ACME client (RFC 8555) for HTTP-01 certificates: just what the leader's
automated certificates need (controller/loops/acme.py).

One account per cluster (an EC P-256 key, requests signed ES256). An order
for one host name goes: new order, its authorization's http-01 challenge
(whose key authorization the routers then answer at
``/.well-known/acme-challenge/TOKEN``), a poll until the CA has checked it,
a CSR to finalize, a poll until the certificate is issued, and the chain.
Each step is one request with a deadline; a refused nonce (``badNonce``) is
retried with the fresh one the refusal carries, as the RFC asks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from slipway import http1

JOSE = "application/jose+json"
USER_AGENT = "slipway-controller (ACME HTTP-01)"
_TIMEOUT = 15.0


class AcmeError(Exception):
    """The CA refused, or the exchange failed; the message is for the user."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(32, "big")


def jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(_int_bytes(numbers.x)),
        "y": b64url(_int_bytes(numbers.y)),
    }


def thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638: the digest of the JWK's required members, sorted, no spaces."""
    canonical = json.dumps(jwk(key), sort_keys=True, separators=(",", ":")).encode()
    return b64url(hashlib.sha256(canonical).digest())


def key_authorization(token: str, key: ec.EllipticCurvePrivateKey) -> str:
    return f"{token}.{thumbprint(key)}"


def new_account_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AcmeError("the ACME account key is not an EC key")
    return key


def csr_for(host: str) -> tuple[bytes, bytes]:
    """A new private key (PEM) and a CSR (DER) naming ``host``."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key_pem(key), csr.public_bytes(serialization.Encoding.DER)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise AcmeError(f"the CA answered {self.status} with something not JSON") from exc
        if not isinstance(value, dict):
            raise AcmeError(f"the CA answered {self.status} with a JSON {type(value).__name__}")
        return value


def _problem(answer: Answer) -> str:
    try:
        problem = answer.json()
    except AcmeError:
        return f"HTTP {answer.status}"
    kind = str(problem.get("type", "")).rpartition(":")[2] or f"HTTP {answer.status}"
    return f"{kind}: {problem.get('detail', '')}".rstrip(": ")


# Published (True) and withdrawn (False) around a challenge: where the routers read it.
Publish = Callable[[str, str], Awaitable[None]]
Withdraw = Callable[[str], Awaitable[None]]


class AcmeClient:
    def __init__(
        self,
        directory_url: str,
        account_key: ec.EllipticCurvePrivateKey,
        *,
        context: ssl.SSLContext | None = None,
        contact: str = "",
        poll_interval: float = 1.0,
        polls: int = 60,
    ) -> None:
        self.directory_url = directory_url
        self.key = account_key
        self.context = context
        self.contact = contact
        self.poll_interval = poll_interval
        self.polls = polls
        self.account_url = ""
        self._directory: dict[str, Any] = {}
        self._nonce = ""

    async def _http(self, method: str, url: str, body: bytes = b"", jose: bool = False) -> Answer:
        # RFC 8555 6.1: every request names its client.
        headers = {"User-Agent": USER_AGENT, **({"Content-Type": JOSE} if jose else {})}
        try:
            got = await http1.request(
                method, url, headers=headers, body=body, context=self.context, timeout=_TIMEOUT
            )
        except http1.HttpError as exc:
            raise AcmeError(f"cannot reach the ACME server: {exc}") from exc
        if nonce := got.headers.get("replay-nonce"):
            self._nonce = nonce
        return Answer(got.status, got.headers, got.body)

    async def directory(self) -> dict[str, Any]:
        if not self._directory:
            answer = await self._http("GET", self.directory_url)
            if answer.status != 200:
                raise AcmeError(f"the ACME directory answered {_problem(answer)}")
            self._directory = answer.json()
        return self._directory

    async def _url(self, name: str) -> str:
        url = (await self.directory()).get(name)
        if not isinstance(url, str):
            raise AcmeError(f"the ACME directory has no {name}")
        return url

    async def _fresh_nonce(self) -> str:
        if not self._nonce:
            answer = await self._http("GET", await self._url("newNonce"))
            if not self._nonce:
                raise AcmeError(f"the ACME server gave no nonce ({_problem(answer)})")
        nonce, self._nonce = self._nonce, ""
        return nonce

    def _sign(self, url: str, nonce: str, payload: dict[str, Any] | None) -> bytes:
        protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
        if self.account_url:
            protected["kid"] = self.account_url
        else:
            protected["jwk"] = jwk(self.key)
        head = b64url(json.dumps(protected).encode())
        body = "" if payload is None else b64url(json.dumps(payload).encode())
        der = self.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = b64url(_int_bytes(r) + _int_bytes(s))
        return json.dumps({"protected": head, "payload": body, "signature": signature}).encode()

    async def post(self, url: str, payload: dict[str, Any] | None) -> Answer:
        """A signed POST (``payload`` None: POST-as-GET)."""
        for _ in range(3):
            answer = await self._http(
                "POST", url, self._sign(url, await self._fresh_nonce(), payload), jose=True
            )
            if answer.status == 400 and "badNonce" in _problem(answer):
                continue
            return answer
        raise AcmeError("the ACME server refused three fresh nonces in a row")

    async def register(self) -> str:
        """The account's URL, made if new (the same key finds the same account)."""
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if self.contact:
            payload["contact"] = [f"mailto:{self.contact}"]
        answer = await self.post(await self._url("newAccount"), payload)
        if answer.status not in (200, 201) or "location" not in answer.headers:
            raise AcmeError(f"the ACME server refused the account: {_problem(answer)}")
        self.account_url = answer.headers["location"]
        return self.account_url

    async def _poll(self, url: str, done: set[str], what: str) -> dict[str, Any]:
        for _ in range(self.polls):
            answer = await self.post(url, None)
            if answer.status != 200:
                raise AcmeError(f"reading the {what} failed: {_problem(answer)}")
            body = answer.json()
            status = str(body.get("status", ""))
            if status in done:
                return body
            if status == "invalid":
                raise AcmeError(f"the {what} is invalid: {_failure(body)}")
            await asyncio.sleep(self.poll_interval)
        raise AcmeError(f"the {what} was not ready after {self.polls} checks")

    async def issue(self, host: str, publish: Publish, withdraw: Withdraw) -> tuple[bytes, bytes]:
        """A certificate for ``host`` over HTTP-01: (chain PEM, key PEM)."""
        if not self.account_url:
            await self.register()
        answer = await self.post(
            await self._url("newOrder"), {"identifiers": [{"type": "dns", "value": host}]}
        )
        if answer.status != 201 or "location" not in answer.headers:
            raise AcmeError(f"the ACME server refused the order: {_problem(answer)}")
        order_url, order = answer.headers["location"], answer.json()
        for authz_url in order.get("authorizations", []):
            await self._authorize(str(authz_url), publish, withdraw)
        key, csr = csr_for(host)
        answer = await self.post(str(order["finalize"]), {"csr": b64url(csr)})
        if answer.status != 200:
            raise AcmeError(f"the ACME server refused to finalize: {_problem(answer)}")
        order = await self._poll(order_url, {"valid"}, "order")
        answer = await self.post(str(order["certificate"]), None)
        if answer.status != 200:
            raise AcmeError(f"downloading the certificate failed: {_problem(answer)}")
        return answer.body, key

    async def _authorize(self, url: str, publish: Publish, withdraw: Withdraw) -> None:
        answer = await self.post(url, None)
        if answer.status != 200:
            raise AcmeError(f"reading the authorization failed: {_problem(answer)}")
        authz = answer.json()
        if authz.get("status") == "valid":
            return  # validated for an earlier order
        challenge = next(
            (c for c in authz.get("challenges", []) if c.get("type") == "http-01"), None
        )
        if challenge is None:
            raise AcmeError("the ACME server offers no http-01 challenge for this name")
        token = str(challenge["token"])
        await publish(token, key_authorization(token, self.key))
        try:
            answer = await self.post(str(challenge["url"]), {})
            if answer.status != 200:
                raise AcmeError(f"the ACME server refused the challenge: {_problem(answer)}")
            await self._poll(url, {"valid"}, "authorization")
        finally:
            await withdraw(token)


def _failure(body: dict[str, Any]) -> str:
    """The first error an invalid authorization's challenges carry."""
    for challenge in body.get("challenges", []):
        error = challenge.get("error")
        if isinstance(error, dict):
            return str(error.get("detail") or error.get("type") or "no detail")
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("detail") or error.get("type"))
    return "no detail given"
