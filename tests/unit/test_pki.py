from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from slipway import errors, pki


def test_a_node_certificate_names_the_etcd_user_the_nats_user_and_the_role(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca")
    bundle = pki.issue(ca, tmp_path / "n1", pki.Role.NODE, name="n1", hosts=["10.0.0.5"])
    cert = bundle.certificate()
    assert cert.subject.rfc4514_string() == "CN=node.n1,OU=node,O=Slipway"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["node@slipway"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "10.0.0.5",
    ]
    assert bundle.identity().node == "n1"
    assert bundle.identity().role is pki.Role.NODE
    assert stat.S_IMODE(bundle.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600


def test_a_second_ca_init_refuses_to_replace_the_first(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    before = (tmp_path / "ca.crt").read_bytes()
    with pytest.raises(errors.AlreadyExists):
        pki.init_ca(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == before


def test_a_signed_request_gets_our_subject_not_the_one_it_asked_for(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca")
    _, csr = pki.new_key_and_csr("root")  # asks to be root
    cert_pem = pki.sign_csr(ca, csr, pki.Role.NODE, name="n2")
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert pki.identity_of(cert).common_name == "node.n2"


def test_invalid_node_names_and_requests_are_refused(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca")
    with pytest.raises(errors.InvalidArgument, match="invalid name"):
        pki.issue(ca, tmp_path / "x", pki.Role.NODE, name="Bad/Name")
    with pytest.raises(errors.InvalidArgument, match="malformed"):
        pki.sign_csr(ca, b"not a csr", pki.Role.NODE, name="n3")


def test_a_bundle_missing_files_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(errors.FailedPrecondition, match="certs issue"):
        pki.Bundle(tmp_path).check()
