"""domains, domains:add, domains:info, domains:remove, domains:wait; certs,
certs:add, certs:info, certs:remove, certs:ca; certs:auto, certs:auto:enable,
certs:auto:disable."""

from __future__ import annotations

import time
from pathlib import Path

import click

from slipway import errors
from slipway.cli.base import app_option, cli, json_option, with_client
from slipway.cli.output import emit_json, heading, table, when
from slipway.cli.settings import resolve_ca_file
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb

# -- domains --------------------------------------------------------------------


@cli.command("domains")
@app_option
@json_option
@with_client
def domains_list(client: Client, app: str, as_json: bool) -> None:
    """List the app's domains: its default one, then its custom ones with the
    DNS target to point each at."""
    domains = list(client.list_domains(app).domains)
    if as_json:
        emit_json(domains)
        return
    default = [d for d in domains if d.kind == "default"]
    custom = [d for d in domains if d.kind == "custom"]
    heading(f"{app} Default Domain")
    for d in default:
        click.echo(d.hostname)
    click.echo()
    heading(f"{app} Custom Domains")
    if not custom:
        click.echo(f"none yet; add one with: slipway domains:add HOST -a {app}")
        return
    headers = ["Domain Name", "DNS Record Type", "DNS Target", "Certificate"]
    rows = [[d.hostname, "CNAME", d.cname, d.certificate or "-"] for d in custom]
    if any(d.acm_status for d in custom):
        headers.append("ACM Status")
        for row, d in zip(rows, custom, strict=True):
            row.append(d.acm_status or "-")
    table(headers, rows)


def _show_domain(domain: pb.Domain) -> None:
    click.echo(f"Hostname:     {domain.hostname}")
    click.echo(f"Kind:         {domain.kind}")
    click.echo(f"DNS target:   {domain.cname}")
    click.echo(f"Status:       {domain.status}")
    click.echo(f"Certificate:  {domain.certificate or '-'}")
    if domain.acm_status:
        reason = f" ({domain.acm_status_reason})" if domain.acm_status_reason else ""
        click.echo(f"ACM status:   {domain.acm_status}{reason}")
    click.echo(f"Created at:   {when(domain.created_at)}")


@cli.command("domains:add")
@click.argument("hostname", metavar="HOST")
@app_option
@json_option
@with_client
def domains_add(client: Client, hostname: str, app: str, as_json: bool) -> None:
    """Answer at HOST too: www.example.com, or *.example.com for every name one
    label under it. A host name belongs to one app only."""
    domain = client.add_domain(app, hostname).domain
    if as_json:
        emit_json(domain)
        return
    click.echo(f"Adding {domain.hostname} to {app}... done")
    click.echo(
        f"Configure your DNS provider to point {domain.hostname} at the DNS target "
        f"{domain.cname} (a CNAME record)."
    )
    if not domain.certificate:
        click.echo(f"For HTTPS, upload a certificate for it: slipway certs:add CERT KEY -a {app}")


@cli.command("domains:info")
@click.argument("hostname", metavar="HOST")
@app_option
@json_option
@with_client
def domains_info(client: Client, hostname: str, app: str, as_json: bool) -> None:
    """Show one custom domain: its DNS target, status and certificate."""
    domain = client.get_domain(app, hostname).domain
    if as_json:
        emit_json(domain)
        return
    _show_domain(domain)


@cli.command("domains:remove")
@click.argument("hostname", metavar="HOST")
@app_option
@with_client
def domains_remove(client: Client, hostname: str, app: str) -> None:
    """Stop answering at HOST (its certificate, if uploaded, stays for other domains)."""
    domain = client.remove_domain(app, hostname).domain
    click.echo(f"Removing {domain.hostname} from {app}... done")


@cli.command("domains:wait")
@click.argument("hostname", metavar="HOST")
@app_option
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait at most."
)
@with_client
def domains_wait(client: Client, hostname: str, app: str, timeout: float) -> None:
    """Wait until HOST is served: routed, and with automated certificates on,
    its certificate issued. Fails at once when its order is failing."""
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        domain = client.get_domain(app, hostname).domain
        if domain.status == "succeeded" and domain.acm_status in ("", "issued"):
            click.echo(f"{domain.hostname} is ready")
            return
        if domain.acm_status == "failing":
            raise errors.FailedPrecondition(
                f"{domain.hostname}'s certificate order is failing: {domain.acm_status_reason} "
                "(it is retried; see certs:auto)",
                reason="acm_failing",
            )
        if time.monotonic() >= deadline:
            raise errors.Unavailable(
                f"{domain.hostname} is still {domain.acm_status or domain.status} "
                f"after {timeout:.0f} s"
            )
        state = domain.acm_status or domain.status
        if state != shown:
            click.echo(f"Waiting for {domain.hostname} ({state})...", err=True)
            shown = state
        time.sleep(1.0)


# -- certificates -----------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _show_cert(cert: pb.Certificate) -> None:
    click.echo(f"Name:               {cert.name}")
    click.echo(f"Certificate names:  {', '.join(cert.cert_domains)}")
    click.echo(f"Served for:         {', '.join(cert.domains) or '-'}")
    click.echo(f"Subject:            {cert.subject}")
    click.echo(f"Issuer:             {cert.issuer}")
    click.echo(f"Self-signed:        {'yes' if cert.self_signed else 'no'}")
    click.echo(f"Starts at:          {when(cert.starts_at)}")
    click.echo(f"Expires at:         {when(cert.expires_at)}")


@cli.command("certs")
@app_option
@json_option
@with_client
def certs_list(client: Client, app: str, as_json: bool) -> None:
    """List the certificates the app uploaded and the domains each is served for."""
    found = list(client.list_certificates(app).certificates)
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo(f"{app} has no certificates. Add one with: slipway certs:add CERT KEY -a {app}")
        return
    table(
        ["Name", "Common Name(s)", "Expires", "Served For"],
        [
            [c.name, ", ".join(c.cert_domains), when(c.expires_at), ", ".join(c.domains) or "-"]
            for c in found
        ],
    )


@cli.command("certs:add")
@click.argument("cert", metavar="CERT", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("key", metavar="KEY", type=click.Path(path_type=Path, dir_okay=False))
@app_option
@json_option
@with_client
def certs_add(client: Client, cert: Path, key: Path, app: str, as_json: bool) -> None:
    """Serve an HTTPS certificate for the app's domains it covers. CERT is the
    chain in PEM (the certificate first, then its intermediates), KEY its
    unencrypted private key; the key is kept sealed with the cluster key."""
    added = client.add_certificate(
        app, _read(cert, "certificate chain"), _read(key, "private key")
    ).certificate
    if as_json:
        emit_json(added)
        return
    click.echo(f"Adding certificate {added.name} to {app}... done")
    _show_cert(added)


@cli.command("certs:info")
@click.option("--name", "name", metavar="NAME", help="Which certificate (when it has several).")
@app_option
@json_option
@with_client
def certs_info(client: Client, name: str | None, app: str, as_json: bool) -> None:
    """Show a certificate's names, issuer, dates and the domains it is served for."""
    cert = client.get_certificate(app, _one(client, app, name)).certificate
    if as_json:
        emit_json(cert)
        return
    _show_cert(cert)


@cli.command("certs:remove")
@click.option("--name", "name", metavar="NAME", help="Which certificate (when it has several).")
@app_option
@with_client
def certs_remove(client: Client, name: str | None, app: str) -> None:
    """Stop serving a certificate; its domains fall back to another that covers
    them, else to the routers' default certificate."""
    removed = client.remove_certificate(app, _one(client, app, name)).certificate
    click.echo(f"Removing certificate {removed.name} from {app}... done")


def _one(client: Client, app: str, name: str | None) -> str:
    if name:
        return name
    names = [c.name for c in client.list_certificates(app).certificates]
    if len(names) == 1:
        return names[0]
    if not names:
        raise errors.NotFound(f"{app} has no certificates")
    raise errors.InvalidArgument(
        f"{app} has {len(names)} certificates; choose one with --name ({', '.join(names)})"
    )


@cli.command("certs:ca")
@click.option("--path", "path_only", is_flag=True, help="Print the file's path, not its PEM.")
def certs_ca(path_only: bool) -> None:
    """Print the cluster CA certificate the CLI trusts (saved at login), for
    browsers and curl: curl --cacert "$(slipway certs:ca --path)" https://APP.localhost:8443/"""
    ca_file = resolve_ca_file()
    if ca_file is None:
        raise errors.FailedPrecondition(
            "the CLI has no cluster CA: log in with --ca-file, or set SLIPWAY_CA_FILE",
            reason="no_ca_file",
        )
    if path_only:
        click.echo(str(ca_file))
        return
    click.echo(_read(ca_file, "cluster CA").decode(), nl=False)


# -- automated certificates ------------------------------------------------------


def _show_auto(app: str, auto: pb.AutoCertsResponse) -> None:
    if not auto.enabled:
        click.echo(f"Automated certificates are off for {app}; turn them on: certs:auto:enable")
        return
    heading(f"{app} Automated Certificates")
    if not auto.domains:
        click.echo(f"no custom domains yet; add one with: slipway domains:add HOST -a {app}")
        return
    table(
        ["Domain", "Status", "Expires", "Last Error", "Next Try"],
        [
            [
                d.hostname,
                d.status,
                when(d.expires_at),
                d.last_error or "-",
                when(d.next_attempt_at) if d.status == "failing" else "-",
            ]
            for d in auto.domains
        ],
    )


@cli.command("certs:auto")
@app_option
@json_option
@with_client
def certs_auto(client: Client, app: str, as_json: bool) -> None:
    """Show each custom domain's automated certificate: status, end, last error."""
    auto = client.get_auto_certs(app)
    if as_json:
        emit_json(auto)
        return
    _show_auto(app, auto)


@cli.command("certs:auto:enable")
@app_option
@json_option
@with_client
def certs_auto_enable(client: Client, app: str, as_json: bool) -> None:
    """Obtain a certificate for each custom domain over ACME HTTP-01, renewed 30
    days before it ends. Point each domain's DNS at the routers first: the CA
    checks it on port 80. Wildcard domains need a certificate from certs:add."""
    auto = client.enable_auto_certs(app)
    if as_json:
        emit_json(auto)
        return
    click.echo(f"Enabling automated certificates for {app}... done")
    click.echo(f"Follow their progress with: slipway certs:auto -a {app}")


@cli.command("certs:auto:disable")
@app_option
@with_client
def certs_auto_disable(client: Client, app: str) -> None:
    """Stop renewing and remove the app's automated certificates."""
    client.disable_auto_certs(app)
    click.echo(f"Disabling automated certificates for {app}... done")
