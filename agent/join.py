"""``slipway-agent join``: turn this host into a node with a one-time join token.

    key pair made here ──CSR, join token, advertise address──▶ JoinService.Join
    (TLS; the controller's certificate checked against --ca-file)
    ◀── certificate (node.NAME), CA certificate, the node's API token

Written into the credentials directory: ``ca.crt``, ``tls.crt``, ``tls.key``
(0600) and ``node-token`` (0600). ``slipway-agent --credentials DIR`` then
runs as that node: its name comes from the certificate, its token from
``node-token``. The private key never leaves the host.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import click
import grpc

from slipway import errors, pki, tls
from slipway.v1 import join_pb2 as jpb
from slipway.v1 import join_pb2_grpc

NODE_TOKEN_FILE = "node-token"
JOIN_TIMEOUT = 30.0


def node_token_path(credentials: Path) -> Path:
    return credentials / NODE_TOKEN_FILE


def read_node_token(credentials: Path) -> str:
    """The node token ``join`` saved beside the bundle ("" when there is none)."""
    try:
        return node_token_path(credentials).read_text().strip()
    except FileNotFoundError:
        return ""


def _write_secret(path: Path, data: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Joined:
    node: str
    bundle: pki.Bundle
    not_after: str


def join(controller: str, ca_file: Path, token: str, out: Path, advertise_address: str) -> Joined:
    """Ask ``controller`` to admit this host; write the bundle and node token into ``out``."""
    key_pem, csr_pem = pki.new_key_and_csr("node")
    creds = tls.grpc_channel_credentials(None, ca_file=ca_file)
    request = jpb.JoinRequest(token=token, csr_pem=csr_pem, advertise_address=advertise_address)
    with grpc.secure_channel(controller, creds) as channel:
        try:
            reply: jpb.JoinResponse = join_pb2_grpc.JoinServiceStub(channel).Join(
                request, timeout=JOIN_TIMEOUT
            )
        except grpc.RpcError as exc:
            details = exc.details() or ""  # type: ignore[attr-defined]
            if tls.tls_failure(details, ca_file):
                raise tls.unreachable(controller, details, ca_file) from exc
            raise errors.from_rpc(exc) from exc
    if reply.ca_certificate_pem.strip() != ca_file.read_bytes().strip():
        raise errors.FailedPrecondition(
            f"the controller signs with another CA than {ca_file}, the one its own "
            "certificate comes from: its --ca-dir and --credentials disagree"
        )
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    bundle = pki.write_bundle(
        out, ca_pem=reply.ca_certificate_pem, cert_pem=reply.certificate_pem, key_pem=key_pem
    )
    _write_secret(node_token_path(out), reply.node_token)
    identity = bundle.identity()
    return Joined(reply.node, bundle, identity.not_after.isoformat())


@click.command("join", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--controller",
    required=True,
    envvar="SLIPWAY_CONTROLLER",
    metavar="HOST:PORT",
    help="A controller started with --ca-dir (its API address).",
)
@click.option(
    "--ca-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The cluster CA's certificate (ca.crt): the controller's certificate is checked "
    "against it before the token is sent.",
)
@click.option(
    "--token",
    required=True,
    envvar="SLIPWAY_JOIN_TOKEN",
    help="The join token from `slipway-controller nodes join-token NAME` (works once).",
)
@click.option(
    "--credentials",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write ca.crt, tls.crt, tls.key and node-token; then run "
    "`slipway-agent --credentials DIR`.",
)
@click.option(
    "--advertise-address",
    envvar="SLIPWAY_ADVERTISE_ADDRESS",
    default="127.0.0.1",
    show_default=True,
    help="The address controllers and routers reach this node at; its certificate names it. "
    "Give the agent the same --advertise-address.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def join_cmd(
    controller: str,
    ca_file: Path,
    token: str,
    credentials: Path,
    advertise_address: str,
    as_json: bool,
) -> None:
    """Join this host to the cluster as the node its join token names."""
    try:
        joined = join(controller, ca_file, token, credentials, advertise_address)
    except errors.SlipwayError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps(
                {
                    "node": joined.node,
                    "credentials": str(credentials),
                    "certificate_not_after": joined.not_after,
                }
            )
        )
        return
    click.echo(
        f"Joined as node {joined.node}; credentials in {credentials} "
        f"(certificate valid until {joined.not_after[:10]})"
    )
    click.echo(
        f"Start the agent with: slipway-agent --credentials {credentials} "
        f"--controllers {controller} --advertise-address {advertise_address}",
        err=True,
    )
