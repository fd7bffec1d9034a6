"""Custom domains and uploaded certificates, the pure part: which names are
accepted, what a certificate covers, and which certificate each domain gets."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.core import domains as core
from controller.core.domains import CertRecord, Leaf
from slipway import errors, pki

NOW = 1_800_000_000.0
DAY = 86400.0


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("www.Example.COM", "www.example.com"),
        ("www.example.com.", "www.example.com"),
        ("*.example.com", "*.example.com"),
        ("a-b.c9.example.org", "a-b.c9.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_host_names_are_stored_in_one_form(given: str, stored: str) -> None:
    assert core.hostname(given, "localhost") == stored


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("", "give a host name"),
        ("example", "not a full host name"),
        ("*.com", "wildcard covers names under a domain"),
        ("www.*.example.com", "wildcard is `*.` at the start only"),
        ("bad_name.example.com", "'bad_name' is not a label"),
        ("-lead.example.com", "not a label"),
        ("10.0.0.1", "IP address"),
        ("demo.localhost", "under the platform's own domain"),
        ("localhost.", "not a full host name"),
        ("a." * 127 + "com", "at most 253"),
    ],
)
def test_bad_host_names_are_refused_with_a_reason(given: str, says: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=says.replace("*", r"\*")):
        core.hostname(given, "localhost")


def test_the_platform_domain_is_refused_under_any_base() -> None:
    with pytest.raises(errors.InvalidArgument, match="platform's own domain"):
        core.hostname("shop.apps.example.com", "apps.example.com")
    assert core.hostname("shop.example.com", "apps.example.com") == "shop.example.com"


@pytest.mark.parametrize(
    ("names", "host", "covered"),
    [
        (["www.example.com"], "www.example.com", True),
        (["WWW.example.com"], "www.example.com", True),
        (["*.example.com"], "www.example.com", True),
        (["*.example.com"], "*.example.com", True),
        (["*.example.com"], "example.com", False),
        (["*.example.com"], "a.b.example.com", False),
        (["example.com"], "www.example.com", False),
        (["www.example.com"], "*.example.com", False),
        (["other.test", "*.example.com"], "shop.example.com", True),
    ],
)
def test_what_a_certificate_covers(names: list[str], host: str, covered: bool) -> None:
    assert core.covers(names, host) is covered


def cert(name: str, names: tuple[str, ...], created: float, ends: float) -> CertRecord:
    leaf = Leaf(names, f"CN={names[0]}", "CN=ca", created, ends, False)
    return CertRecord(name, "demo", f"chain of {name}", "sealed", created, leaf)


def test_each_domain_gets_the_newest_valid_certificate_covering_it() -> None:
    old_wild = cert("wild", ("*.example.com",), NOW - 10 * DAY, NOW + 80 * DAY)
    new_www = cert("www", ("www.example.com",), NOW - DAY, NOW + 90 * DAY)
    expired = cert("gone", ("shop.example.com",), NOW - 99 * DAY, NOW - DAY)
    got = core.assign(
        ["www.example.com", "api.example.com", "shop.example.com", "other.test"],
        [old_wild, new_www, expired],
        NOW,
    )
    assert {h: c.name for h, c in got.items()} == {
        "www.example.com": "www",
        "api.example.com": "wild",
        # The expired one is not served; the wildcard covers the name instead.
        "shop.example.com": "wild",
    }


def test_the_plan_writes_what_changed_and_deletes_only_uploads() -> None:
    www = cert("www", ("www.example.com",), NOW, NOW + 90 * DAY)
    served = {
        "www.example.com": ("www", "chain of www"),  # up to date: untouched
        "old.example.com": ("old", "chain of old"),  # no longer covered: deleted
        "ops.example.com": ("", "an operator's chain"),  # not an upload: left alone
    }
    plan = core.edge_plan(
        ["www.example.com", "old.example.com", "ops.example.com"], [www], served, NOW
    )
    assert plan.put == {} and plan.delete == ["old.example.com"]
    # The same name with another chain (removed and added again) is written again.
    served["www.example.com"] = ("www", "an earlier chain")
    plan = core.edge_plan(["www.example.com"], [www], served, NOW)
    assert list(plan.put) == ["www.example.com"]
    # A removed domain's upload record goes.
    plan = core.edge_plan([], [www], {"www.example.com": ("www", "chain of www")}, NOW)
    assert plan.delete == ["www.example.com"]


def test_certificate_names_come_from_the_first_host_and_do_not_collide() -> None:
    leaf = Leaf(("*.Example.com", "example.com"), "", "", NOW, NOW, False)
    assert core.cert_name(leaf, []) == "star-example-com"
    assert core.cert_name(leaf, ["star-example-com"]) == "star-example-com-2"


# -- uploads --------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    start: float,
    end: float,
    names: tuple[str, ...] = (),
    ca: bool = False,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(start, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(end, datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_an_upload_with_its_intermediate_passes_and_shows_its_names() -> None:
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    mid = _cert("mid", mid_key, "root", root_key, NOW - DAY, NOW + 999 * DAY, ca=True)
    leaf = _cert("www", leaf_key, "mid", mid_key, NOW - DAY, NOW + 90 * DAY, ("www.shop.test",))
    shown = core.check_upload(leaf + mid, _pem_key(leaf_key), NOW)
    assert shown.names == ("www.shop.test",) and shown.issuer == "CN=mid"
    assert not shown.self_signed


def test_bad_uploads_say_what_is_wrong(tmp_path: Path) -> None:
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    mid = _cert("mid", mid_key, "root", root_key, NOW - DAY, NOW + 999 * DAY, ca=True)
    names = ("www.shop.test",)
    leaf = _cert("www", leaf_key, "mid", mid_key, NOW - DAY, NOW + 90 * DAY, names)
    key = _pem_key(leaf_key)
    # Signed by someone other than the intermediate given after it.
    stray = _cert("www", leaf_key, "mid", root_key, NOW - DAY, NOW + 90 * DAY, names)
    with pytest.raises(errors.InvalidArgument, match="chain is broken: certificate 1"):
        core.check_upload(stray + mid, key, NOW)
    ended = _cert("www", leaf_key, "mid", mid_key, NOW - 99 * DAY, NOW - DAY, names)
    with pytest.raises(errors.InvalidArgument, match="expired on"):
        core.check_upload(ended, key, NOW)
    later = _cert("www", leaf_key, "mid", mid_key, NOW + DAY, NOW + 99 * DAY, names)
    with pytest.raises(errors.InvalidArgument, match="not valid before"):
        core.check_upload(later, key, NOW)
    nameless = _cert("www", leaf_key, "mid", mid_key, NOW - DAY, NOW + 90 * DAY)
    with pytest.raises(errors.InvalidArgument, match="names no DNS host"):
        core.check_upload(nameless, key, NOW)
    with pytest.raises(errors.InvalidArgument, match="does not belong"):
        core.check_upload(leaf, _pem_key(mid_key), NOW)
    with pytest.raises(errors.InvalidArgument, match="at most 64 KiB"):
        core.check_upload(leaf * 200, key, NOW)
    ca = pki.init_ca(tmp_path / "ca")
    chain, own_key = pki.edge_certificate(ca, ["a.test"])
    assert core.check_upload(chain, own_key, datetime.datetime.now().timestamp()).names == (
        "a.test",
    )
