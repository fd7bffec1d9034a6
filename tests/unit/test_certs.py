"""Edge certificate records: what a pair must be to be served, and how the
route table keeps them."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.table import RouteTable
from slipway import certs, errors, pki, sealing
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
        certs.decode(b'{"chain": 1}', None)


def test_the_table_keeps_good_records_and_counts_changes(ca: pki.CA) -> None:
    keys = Keys("/t")
    table = RouteTable(keys, "example.test", ca.sealer())
    good = certs.Pair(*pki.edge_certificate(ca, ["www.demo.org"]))
    table.apply("put", keys.route_cert("WWW.demo.org"), certs.encode(good, ca.sealer()), 2)
    assert table.certificates == {"www.demo.org": good} and table.certificates_version == 1
    wrong_key = pki.edge_certificate(ca, ["x.test"])[1]
    bad = certs.encode(certs.Pair(good.chain, wrong_key), ca.sealer())
    table.apply("put", keys.route_cert("shop.demo.org"), bad, 3)
    assert "shop.demo.org" not in table.certificates  # skipped, the rest served
    table.apply("delete", keys.route_cert("www.demo.org"), b"", 4)
    assert table.certificates == {} and table.certificates_version == 2


def test_sealed_keys_are_not_in_the_record_and_open_only_with_the_cluster_key(
    ca: pki.CA,
) -> None:
    pair = certs.Pair(*pki.edge_certificate(ca, ["www.demo.org"]))
    record = certs.encode(pair, ca.sealer())
    body = pair.key.split(b"\n")[1]
    assert body not in record and b'"key"' not in record
    assert certs.decode(record, ca.sealer()) == pair
    with pytest.raises(errors.InvalidArgument, match="no cluster key"):
        certs.decode(record, None)
    other = sealing.Sealer(sealing.new_key())
    with pytest.raises(errors.InvalidArgument, match="sealed with cluster key"):
        certs.decode(record, other)
    # A record an operator wrote with the key in the clear is still served.
    assert certs.decode(certs.encode(pair, None), ca.sealer()) == pair
    keys = Keys("/t")
    blind = RouteTable(keys, "example.test")  # a router whose bundle lacks the key
    blind.apply("put", keys.route_cert("www.demo.org"), record, 2)
    assert blind.certificates == {}


def test_a_damaged_sealed_value_is_refused_not_served(ca: pki.CA) -> None:
    sealer = ca.sealer()
    sealed = sealer.seal(b"secret")
    version, key_id, body = sealed.split(".")
    flipped = body[:-6] + ("A" if body[-6] != "A" else "B") + body[-5:]
    with pytest.raises(errors.InvalidArgument, match="damaged"):
        sealer.open(f"{version}.{key_id}.{flipped}")
    assert sealer.open(sealed) == b"secret"
