"""``slipway-controller ca init`` and ``certs issue``: the cluster CA on the command line.

Thin wrappers over :mod:`slipway.pki`; every failure is one sentence saying
what to do, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from controller.core import validation
from slipway import duration, errors, pki


def parse_duration(value: str) -> int:
    """Seconds in ``90``, ``90s``, ``30m``, ``1h`` or ``7d``."""
    try:
        return duration.seconds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def check_name(value: str) -> str:
    try:
        return pki.check_name(value)
    except errors.SlipwayError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group("ca")
def ca() -> None:
    """The cluster CA that signs every component's certificate."""


@ca.command("init")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write ca.crt and ca.key (0600). Keep ca.key on the controllers that "
    "admit nodes (`serve --ca-dir`) and nowhere else.",
)
def ca_init(directory: Path) -> None:
    """Create the cluster CA (refuses to replace an existing one)."""
    try:
        made = pki.init_ca(directory)
    except errors.SlipwayError as exc:
        raise click.ClickException(str(exc)) from exc
    expires = made.cert.not_valid_after_utc.date().isoformat()
    click.echo(f"Created the cluster CA in {directory} (valid until {expires})")
    click.echo(
        f"Next: slipway-controller certs issue --role controller --host HOST "
        f"--ca-dir {directory} --out DIR",
        err=True,
    )


@click.group("certs")
def certs() -> None:
    """Certificates for the components, signed by the cluster CA."""


@certs.command("issue")
@click.option(
    "--role",
    required=True,
    type=click.Choice([r.value for r in pki.Role]),
    help="Whose certificate: its CN is the etcd user, ROLE@slipway the NATS user.",
)
@click.option("--name", default="", help="The node's name (required with --role node).")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="A DNS name or IP the component is reached at (repeatable; localhost and "
    "127.0.0.1 are always included). A controller's must name its --listen host; "
    "a node's, its advertise address.",
)
@click.option(
    "--ca-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The CA's directory (ca.crt and ca.key).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write ca.crt, tls.crt and tls.key (0600); give it to the daemon as "
    "--credentials. An existing bundle there is replaced (rotation).",
)
@click.option("--days", type=click.IntRange(1, 3650), default=pki.CERT_DAYS, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def certs_issue(
    role: str,
    name: str,
    hosts: tuple[str, ...],
    ca_dir: Path,
    out: Path,
    days: int,
    as_json: bool,
) -> None:
    """Issue a key and certificate for one component into --out."""
    chosen = pki.Role(role)
    if chosen is pki.Role.NODE and not name:
        raise click.UsageError("--role node needs --name NODE (the agent's node name)")
    if chosen is not pki.Role.NODE and name:
        raise click.UsageError("--name is for --role node only")
    try:
        for host in hosts:
            validation.host(host)
        bundle = pki.issue(pki.load_ca(ca_dir), out, chosen, name=name, hosts=hosts, days=days)
        identity = bundle.identity()
    except (errors.SlipwayError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps(
                {
                    "role": identity.role.value,
                    "common_name": identity.common_name,
                    "not_after": identity.not_after.isoformat(),
                    "dir": str(out),
                }
            )
        )
        return
    click.echo(
        f"Issued {identity.common_name} ({identity.role.value}) into {out}, valid until "
        f"{identity.not_after.date().isoformat()}"
    )
