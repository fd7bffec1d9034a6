"""TLS set-up from a credentials bundle, for each kind of connection we make.

Every daemon takes ``--credentials DIR`` (env ``SLIPWAY_CREDENTIALS``): the
bundle its CA-issued certificate lives in (see :mod:`slipway.pki`). The same
certificate is its client identity towards etcd and NATS and its server
certificate for the ports it listens on. Without it a daemon refuses to start
unless ``--insecure`` is given, so nothing ends up plaintext by omission.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc
from cryptography import x509

from slipway import errors
from slipway.pki import Bundle, Identity, identity_of

F = TypeVar("F", bound=Callable[..., Any])

# Servers' certificates name every address they are reached by; gRPC then
# checks the name it dialled against them like any TLS client.


def client_context(bundle: Bundle | None, *, ca_only: Path | None = None) -> ssl.SSLContext:
    """Verify servers against the cluster CA and present our certificate.

    ``ca_only``: trust this CA file and present nothing (the CLI).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if bundle is not None:
        bundle.check()
        ctx.load_verify_locations(cafile=str(bundle.ca_file))
        ctx.load_cert_chain(str(bundle.cert_file), str(bundle.key_file))
    elif ca_only is not None:
        ctx.load_verify_locations(cafile=str(ca_only))
    return ctx


def server_context(bundle: Bundle, *, require_client_cert: bool = True) -> ssl.SSLContext:
    bundle.check()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(bundle.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(bundle.cert_file), str(bundle.key_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def grpc_channel_credentials(
    bundle: Bundle | None, *, ca_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials: the bundle's CA and certificate, or a CA file alone."""
    if bundle is not None:
        bundle.check()
        return grpc.ssl_channel_credentials(
            root_certificates=bundle.ca_pem(),
            private_key=bundle.key_pem(),
            certificate_chain=bundle.cert_pem(),
        )
    if ca_file is None:
        raise errors.FailedPrecondition("no CA to check the server's certificate against")
    try:
        return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    except OSError as exc:
        raise errors.FailedPrecondition(f"cannot read the cluster CA {ca_file}: {exc}") from exc


def grpc_server_credentials(
    bundle: Bundle, *, require_client_cert: bool = False
) -> grpc.ServerCredentials:
    """Server credentials. Python's gRPC either requires a client certificate or
    never asks for one, so ports that CLIs reach (the API) authenticate callers
    by token instead; ports only our daemons call may require certificates."""
    bundle.check()
    return grpc.ssl_server_credentials(
        [(bundle.key_pem(), bundle.cert_pem())],
        root_certificates=bundle.ca_pem() if require_client_cert else None,
        require_client_auth=require_client_cert,
    )


def tls_failure(detail: str, ca_file: Path | None, where: str = "the controller") -> str:
    """One sentence for a TLS failure in a gRPC error's details ("" when it is none)."""
    low = detail.lower()
    if "certificate_verify_failed" in low:
        return f"{where}'s certificate is not signed by the cluster CA in {ca_file}"
    if "wrong_version_number" in low:
        return (
            f"{where} does not speak TLS, so its certificate is not signed by the cluster CA "
            f"in {ca_file} (a controller started without --credentials?)"
        )
    if "hostname verification" in low or "peer name" in low:
        return (
            f"{where}'s certificate does not name the address dialled; re-issue it with "
            "`slipway-controller certs issue --host HOST`"
        )
    if "handshake failed" in low:
        return f"TLS with {where} failed (cluster CA {ca_file}): {detail}"
    return ""


def unreachable(where: str, reason: str, ca_file: Path | None) -> errors.Unavailable:
    """The error for "no controller at ``where`` answered" (``reason``: the last one's)."""
    sentence = tls_failure(reason, ca_file, f"the controller at {where}") if ca_file else ""
    if sentence:
        return errors.Unavailable(sentence, reason="tls")
    message = f"cannot reach the controller at {where}" + (f": {reason}" if reason else "")
    if ca_file is None and "socket closed" in reason.lower():
        message += (
            " (if it serves TLS, give its cluster CA: `slipway login --ca-file ca.crt` "
            "or SLIPWAY_CA_FILE)"
        )
    return errors.Unavailable(message)


def add_port(
    server: grpc.aio.Server,
    address: str,
    bundle: Bundle | None,
    *,
    require_client_cert: bool = False,
) -> int:
    """Listen on ``address``: TLS with the bundle, plaintext without; the bound port."""
    if bundle is None:
        return server.add_insecure_port(address)
    creds = grpc_server_credentials(bundle, require_client_cert=require_client_cert)
    return server.add_secure_port(address, creds)


def peer_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """The caller's certificate identity on a port that requires one (else None)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return identity_of(x509.load_pem_x509_certificate(pems[0]))
    except (ValueError, errors.SlipwayError):
        return None


def credentials_options(f: F) -> F:
    """``--credentials DIR`` and ``--insecure``, resolved into ``credentials: Bundle | None``."""

    def resolve(ctx: click.Context, param: click.Parameter, value: Path | None) -> Bundle | None:
        if value is None:
            return None
        try:
            return Bundle(value).check()
        except errors.SlipwayError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc

    f = click.option(
        "--insecure",
        is_flag=True,
        envvar="SLIPWAY_INSECURE",
        help="Run with no TLS and no credentials (development only; every engine must be "
        "plaintext too).",
    )(f)
    return click.option(
        "--credentials",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SLIPWAY_CREDENTIALS",
        callback=resolve,
        help="Directory with this daemon's ca.crt, tls.crt and tls.key, from "
        "`slipway-controller certs issue` (env SLIPWAY_CREDENTIALS).",
    )(f)


def require(credentials: Bundle | None, insecure: bool, daemon: str) -> Bundle | None:
    """The bundle, or None with ``--insecure``; neither is an error that says what to do."""
    if credentials is None and not insecure:
        raise click.UsageError(
            f"{daemon} needs --credentials DIR (from `slipway-controller certs issue`), "
            "or --insecure to run without TLS"
        )
    return credentials
