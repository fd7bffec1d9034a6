"""etcd on TLS, the pure parts: engine flags, channel target names, error
translation, and the permissions each role is given."""

from __future__ import annotations

from pathlib import Path

import aetcd.exceptions
import grpc
import pytest
from aetcd import rpc

from slipway import engines, errors, etcdauth, pki
from slipway.etcd import CLUSTER_NAME, Etcd, _translate, grpc_target, server_name


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def ca(tmp_path: Path) -> pki.CA:
    return pki.init_ca(tmp_path / "ca")


def test_a_tls_member_speaks_https_and_wants_client_certificates(
    tmp_path: Path, ca: pki.CA
) -> None:
    bundle = pki.issue(ca, tmp_path / "engine", pki.Role.ENGINE, hosts=["10.0.0.1"])
    argv = engines.etcd(
        tmp_path / "etcd", host="10.0.0.1", client_port=2379, peer_port=2380, tls=bundle
    ).argv
    assert flag(argv, "--listen-client-urls") == "https://10.0.0.1:2379"
    assert flag(argv, "--advertise-client-urls") == "https://10.0.0.1:2379"
    assert flag(argv, "--listen-peer-urls") == "https://10.0.0.1:2380"
    assert flag(argv, "--initial-cluster") == "slipway=https://10.0.0.1:2380"
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
    for name in ("--trusted-ca-file", "--peer-trusted-ca-file"):
        assert flag(argv, name) == str(bundle.ca_file)
    for name in ("--cert-file", "--peer-cert-file"):
        assert flag(argv, name) == str(bundle.cert_file)
    for name in ("--key-file", "--peer-key-file"):
        assert flag(argv, name) == str(bundle.key_file)


def test_a_plaintext_member_is_as_before(tmp_path: Path) -> None:
    argv = engines.etcd(tmp_path / "etcd", client_port=2379, peer_port=2380).argv
    assert flag(argv, "--listen-client-urls") == "http://127.0.0.1:2379"
    assert not [a for a in argv if "cert" in a or a.startswith("https")]


def test_a_cluster_member_on_tls_gets_https_peers_and_needs_the_cluster_name(
    tmp_path: Path, ca: pki.CA
) -> None:
    initial = "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,c=https://10.0.0.3:2380"
    named = pki.issue(ca, tmp_path / "a", pki.Role.ENGINE, hosts=["10.0.0.1", CLUSTER_NAME])
    ports = {"client_port": 2379, "peer_port": 2380}
    argv = engines.etcd(
        tmp_path / "etcd", host="10.0.0.1", name="a", initial_cluster=initial, tls=named, **ports
    ).argv
    assert flag(argv, "--initial-cluster") == (
        "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380"
    )
    unnamed = pki.issue(ca, tmp_path / "b", pki.Role.ENGINE, hosts=["10.0.0.2"])
    with pytest.raises(errors.FailedPrecondition, match=CLUSTER_NAME):
        engines.etcd(
            tmp_path / "etcd", host="10.0.0.2", initial_cluster=initial, tls=unnamed, **ports
        )


def test_clients_of_several_members_check_them_against_the_cluster_name() -> None:
    assert grpc_target(["https://10.0.0.1:2379"]) == "10.0.0.1:2379"
    assert server_name(["https://10.0.0.1:2379"]) is None
    both = ["https://10.0.0.1:2379", "10.0.0.2:2379"]
    assert grpc_target(both) == "ipv4:10.0.0.1:2379,10.0.0.2:2379"
    assert server_name(both) == CLUSTER_NAME


def test_https_endpoints_need_credentials() -> None:
    with pytest.raises(errors.FailedPrecondition, match="--credentials"):
        Etcd(["https://127.0.0.1:2379"])
    Etcd(["127.0.0.1:2379"])  # plaintext, as before


def test_etcd_errors_become_slipway_errors() -> None:
    denied = aetcd.exceptions.ClientError("etcdserver: permission denied")
    denied.__cause__ = rpc_error(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
    assert isinstance(_translate(denied), errors.PermissionDenied)
    assert "permission denied" in str(_translate(denied))
    unauth = rpc_error(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
    assert isinstance(_translate(unauth), errors.Unauthenticated)
    exists = rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: user name already exists")
    assert isinstance(_translate(exists), errors.AlreadyExists)
    missing = rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: role name not found")
    assert isinstance(_translate(missing), errors.NotFound)
    refused = rpc_error(
        grpc.StatusCode.UNAVAILABLE, "Tls handshake failed: CERTIFICATE_VERIFY_FAILED"
    )
    assert isinstance(_translate(refused), errors.Unauthenticated)
    closed = rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert isinstance(_translate(closed), errors.Unavailable)
    assert "--credentials" in str(_translate(closed, tls=False))
    assert "--credentials" not in str(_translate(closed, tls=True))


async def test_a_request_refused_for_an_auth_change_in_flight_is_tried_again() -> None:
    # A node joining changes etcd's auth store; requests in flight at that moment are
    # refused with "revision of auth store is old" and nothing of them applied.
    etcd = Etcd(["127.0.0.1:2379"])
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            # etcd's own code for it (rpctypes.ErrGRPCAuthOldRevision).
            raise rpc_error(
                grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"
            )
        return "done"

    assert await etcd._call(flaky) == "done" and len(calls) == 3

    async def refused() -> str:
        raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: role name not found")

    with pytest.raises(errors.NotFound):
        await etcd._call(refused)


def test_a_router_reads_routes_only() -> None:
    assert etcdauth.router_grants("/slipway") == {
        etcdauth.Grant(rpc.Permission.READ, b"/slipway/routes/", b"/slipway/routes0")
    }


def test_a_node_writes_its_presence_key_and_the_dyno_records() -> None:
    rw = rpc.Permission.READWRITE
    assert etcdauth.node_grants("/slipway/", "n1") == {
        etcdauth.Grant(rw, b"/slipway/nodes/n1"),
        etcdauth.Grant(rw, b"/slipway/status/", b"/slipway/status0"),
        etcdauth.Grant(rw, b"/slipway/routes/dynos/", b"/slipway/routes/dynos0"),
        # Its firewall's add-on openings: addresses and ports, no secrets.
        etcdauth.Grant(rpc.Permission.READ, b"/slipway/addongrants/", b"/slipway/addongrants0"),
    }
    assert etcdauth.node_user("n1") == "node.n1"
    with pytest.raises(errors.InvalidArgument):
        etcdauth.node_user("N1/../x")


def test_dns_names_of_a_certificate(tmp_path: Path, ca: pki.CA) -> None:
    bundle = pki.issue(ca, tmp_path / "e", pki.Role.ENGINE, hosts=["10.0.0.1", "etcd.example"])
    assert pki.dns_names(bundle.certificate()) == ["localhost", "etcd.example"]
