"""Edge certificate records: what a pair must be to be served, and how the
route table keeps them."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.table import RouteTable
from slipway import certs, errors, pki
from slipway.keys import Keys


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CA:
    return pki.init_ca(Path(tmp_path_factory.mktemp("ca")))


def test_a_matching_pair_passes_and_names_its_hosts(ca: pki.CA) -> None:
    chain, key = pki.edge_certificate(ca, ["www.demo.org", "*.demo.org"])
    leaf = certs.check(chain, key)
    assert pki.dns_names(leaf) == ["www.demo.org", "*.demo.org"]


def test_bad_pairs_say_what_is_wrong(ca: pki.CA) -> None:
    chain, key = pki.edge_certificate(ca, ["a.test"])
    _, other_key = pki.edge_certificate(ca, ["b.test"])
    with pytest.raises(errors.InvalidArgument, match="does not belong"):
        certs.check(chain, other_key)
    with pytest.raises(errors.InvalidArgument, match="chain is not PEM"):
        certs.check(b"not a certificate", key)
    with pytest.raises(errors.InvalidArgument, match="private key"):
        certs.check(chain, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(errors.InvalidArgument, match="not a certificate record"):
        certs.decode(b'{"chain": 1}')


def test_the_table_keeps_good_records_and_counts_changes(ca: pki.CA) -> None:
    keys = Keys("/t")
    table = RouteTable(keys, "example.test")
    good = certs.Pair(*pki.edge_certificate(ca, ["www.demo.org"]))
    table.apply("put", keys.route_cert("WWW.demo.org"), certs.encode(good), 2)
    assert table.certificates == {"www.demo.org": good} and table.certificates_version == 1
    wrong_key = pki.edge_certificate(ca, ["x.test"])[1]
    bad = certs.encode(certs.Pair(good.chain, wrong_key))
    table.apply("put", keys.route_cert("shop.demo.org"), bad, 3)
    assert "shop.demo.org" not in table.certificates  # skipped, the rest served
    table.apply("delete", keys.route_cert("www.demo.org"), b"", 4)
    assert table.certificates == {} and table.certificates_version == 2
