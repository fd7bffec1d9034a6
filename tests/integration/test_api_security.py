"""The API on TLS, node tokens and joins, against real controller and agent processes.

A controller serves TLS with a controller bundle of the session's CA
(``--credentials``) and admits nodes with that CA (``--ca-dir``), on the sealed
session etcd and NATS. Every client is real: the ``slipway`` CLI, the
typed client, raw gRPC stubs, ``slipway-agent join`` and a ``slipway-agent``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from controller.api.auth import Tokens, digest
from controller.api.join import JoinAPI, JoinTokens
from slipway import errors, pki, tls
from slipway.client import Client
from slipway.etcd import Etcd
from slipway.keys import Keys
from slipway.v1 import (
    join_pb2,
    join_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    platform_pb2_grpc,
    types_pb2,
)
from slipway.v1 import platform_pb2 as pb
from tests.harness import secure as secure_harness
from tests.harness.cluster import LocalCluster, controller_config
from tests.harness.controller import BIN, ControllerProcess
from tests.harness.pki import ClusterPKI
from tests.harness.slugs import upload_slug
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NOT_SIGNED = "certificate is not signed by the cluster CA in"


@dataclass
class TLSController(ControllerProcess):
    """A controller on TLS; its CLI trusts ``ca_file`` (None: plaintext CLI)."""

    ca_file: Path | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("SLIPWAY_CA_FILE", None)
        if self.ca_file is not None:
            env["SLIPWAY_CA_FILE"] = str(self.ca_file)
        return env

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``slipway-controller ARGS`` as the operator."""
        return subprocess.run(
            [str(BIN / "slipway-controller"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def node_token(self, node: str) -> str:
        out = self.admin("tokens", "create", "--node", node, "--json")
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["token"])

    def join_token(self, node: str, ttl: str = "1h") -> str:
        out = self.admin("nodes", "join-token", node, "--ttl", ttl, "--json")
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["token"])

    def channel(self) -> grpc.Channel:
        assert self.ca_file is not None
        creds = tls.grpc_channel_credentials(None, ca_file=self.ca_file)
        return grpc.secure_channel(self.address, creds)


def start_tls_controller(
    cluster_pki: ClusterPKI,
    workdir: Path,
    etcd_endpoint: str,
    prefix: str,
    nats_url: str,
    *,
    ca_dir: bool = True,
) -> TLSController:
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["--config", str(controller_config(workdir / "controller.toml"))]
    proc = TLSController(etcd_endpoint, prefix, workdir / "controller", nats_url, extra_args=args)
    proc.admit_nodes = ca_dir
    proc.ca_file = cluster_pki.ca_file
    proc.start()
    return proc


@pytest.fixture
def secure(
    cluster_pki: ClusterPKI, etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[TLSController]:
    proc = start_tls_controller(cluster_pki, tmp_path / "ctl", etcd_endpoint, etcd_prefix, nats_url)
    yield proc
    proc.stop()


def join_cli(
    ctl: TLSController, token: str, out: Path, ca_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "slipway-agent"),
            "join",
            "--controller",
            ctl.address,
            "--ca-file",
            str(ca_file or ctl.ca_file),
            "--token",
            token,
            "--credentials",
            str(out),
            "--advertise-address",
            "127.0.0.1",
            "--json",
        ],
        env=ctl.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


# ------------------------------------------------------------------ TLS clients


def test_a_plaintext_client_is_refused(secure: TLSController) -> None:
    with Client(secure.address, secure.token, timeout=5) as client:
        with pytest.raises(errors.Unavailable, match="--ca-file"):
            client.list_apps()
    plain = dataclasses.replace(secure, ca_file=None)
    result = plain.cli("apps")
    assert result.returncode != 0
    assert "cannot reach the controller" in result.stderr


def test_a_cli_with_another_ca_refuses_the_server(
    secure: TLSController, cluster_pki: ClusterPKI
) -> None:
    foreign = dataclasses.replace(secure, ca_file=cluster_pki.foreign().ca_file)
    result = foreign.cli("apps")
    assert result.returncode != 0
    assert NOT_SIGNED in result.stderr, result.stderr
    assert str(foreign.ca_file) in result.stderr


def test_a_cli_with_the_right_ca_works_and_login_saves_it(secure: TLSController) -> None:
    secure.cli("apps:create", "tls-app", check=True)
    assert "tls-app" in secure.cli("apps", check=True).stdout
    # login --ca-file stores ca_file; later commands need no SLIPWAY_CA_FILE.
    plain = dataclasses.replace(secure, ca_file=None)
    env = plain.env()
    login = subprocess.run(
        [
            str(BIN / "slipway"),
            "login",
            "--api",
            secure.address,
            "--token",
            secure.token,
            "--ca-file",
            str(secure.ca_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert login.returncode == 0, login.stderr
    saved = json.loads(Path(env["SLIPWAY_CONFIG"]).read_text())
    assert saved["ca_file"] == str(Path(str(secure.ca_file)).resolve())
    apps = subprocess.run(
        [str(BIN / "slipway"), "apps"], env=env, capture_output=True, text=True, timeout=30
    )
    assert apps.returncode == 0 and "tls-app" in apps.stdout, apps.stderr


def test_a_cli_with_a_ca_refuses_a_plaintext_controller(
    cluster_pki: ClusterPKI, tmp_path: Path
) -> None:
    # Something plaintext where the controller should be (a controller itself
    # can no longer run plaintext against the sealed engines).
    plain = grpc.server(futures.ThreadPoolExecutor(2))
    port = plain.add_insecure_port("127.0.0.1:0")
    plain.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
    env.update(
        SLIPWAY_API=f"127.0.0.1:{port}",
        SLIPWAY_TOKEN="slw_anything",
        SLIPWAY_CA_FILE=str(cluster_pki.ca_file),
        SLIPWAY_CONFIG=str(tmp_path / "cli.json"),
    )
    try:
        result = subprocess.run(
            [str(BIN / "slipway"), "apps"], env=env, capture_output=True, text=True, timeout=30
        )
    finally:
        plain.stop(None)
    assert result.returncode != 0
    assert NOT_SIGNED in result.stderr and "does not speak TLS" in result.stderr, result.stderr


# ------------------------------------------------------------------ node tokens


def register(channel: grpc.Channel, token: str, node: str) -> node_pb2.RegisterResponse:
    stub = node_pb2_grpc.NodeServiceStub(channel)
    request = node_pb2.RegisterRequest(node=node, advertise_address="127.0.0.1", memory_mb=64)
    reply: node_pb2.RegisterResponse = stub.Register(
        request, timeout=10, metadata=(("authorization", f"Bearer {token}"),)
    )
    return reply


def refusal(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_a_node_token_speaks_for_its_own_node_only(secure: TLSController) -> None:
    n1 = secure.node_token("n1")
    with secure.channel() as channel:
        assert register(channel, n1, "n1").session_id

        denied = refusal(lambda: register(channel, n1, "n2"))
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to node 'n1'" in (denied.details() or "")

        # The operator's token is no node token on a controller with credentials.
        admin = refusal(lambda: register(channel, secure.token, "n1"))
        assert admin.code() is grpc.StatusCode.PERMISSION_DENIED

        # Nor does n2's session id let n1 receive n2's assignments.
        session = register(channel, secure.node_token("n2"), "n2").session_id
        stub = node_pb2_grpc.NodeServiceStub(channel)
        stream = stub.Connect(
            iter([node_pb2.AgentMessage(session_id=session)]),
            timeout=10,
            metadata=(("authorization", f"Bearer {n1}"),),
        )
        connect = refusal(lambda: next(stream))
        assert connect.code() is grpc.StatusCode.PERMISSION_DENIED

        platform = platform_pb2_grpc.PlatformServiceStub(channel)
        listing = refusal(
            lambda: platform.ListApps(
                pb.ListAppsRequest(), timeout=10, metadata=(("authorization", f"Bearer {n1}"),)
            )
        )
        assert listing.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "node token opens NodeService only" in (listing.details() or "")
    # The CLI says the same with a node token.
    result = secure.cli("apps", token=n1)
    assert result.returncode != 0 and "NodeService only" in result.stderr


# ------------------------------------------------------------------ joins


def etcd_has(endpoint: str, key: bytes) -> bool:
    async def get() -> bool:
        async with Etcd([endpoint], credentials=secure_harness.root()) as client:
            return await client.get(key) is not None

    return asyncio.run(get())


def test_a_join_token_works_once(secure: TLSController, tmp_path: Path) -> None:
    token = secure.join_token("j1")
    first = join_cli(secure, token, tmp_path / "j1")
    assert first.returncode == 0, first.stderr
    joined = json.loads(first.stdout)
    assert joined["node"] == "j1"
    bundle = pki.Bundle(tmp_path / "j1").check()
    identity = bundle.identity()
    assert (identity.role, identity.common_name) == (pki.Role.NODE, "node.j1")
    token_file = tmp_path / "j1" / "node-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    with secure.channel() as channel:
        assert register(channel, token_file.read_text().strip(), "j1").session_id

    again = join_cli(secure, token, tmp_path / "j1-again")
    assert again.returncode != 0
    assert "unknown, used or expired join token" in again.stderr


def test_an_expired_join_token_is_refused(secure: TLSController, tmp_path: Path) -> None:
    token = secure.join_token("j2", ttl="1s")
    key = Keys(secure.prefix).join_token(digest(token))
    eventually(lambda: not etcd_has(secure.etcd_endpoint, key), timeout=20, interval=0.2)
    result = join_cli(secure, token, tmp_path / "j2")
    assert result.returncode != 0
    assert "unknown, used or expired join token" in result.stderr
    assert not (tmp_path / "j2" / "tls.crt").exists()


def test_join_needs_a_controller_with_the_ca(
    cluster_pki: ClusterPKI, etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> None:
    ctl = start_tls_controller(
        cluster_pki, tmp_path / "noca", etcd_endpoint, etcd_prefix, nats_url, ca_dir=False
    )
    try:
        token = ctl.join_token("j3")
        result = join_cli(ctl, token, tmp_path / "j3")
        assert result.returncode != 0
        assert "this controller cannot admit nodes: start it with --ca-dir" in result.stderr
        # Refused before the token was touched: a controller with the CA still takes it.
        with ctl.channel() as channel:
            stub = join_pb2_grpc.JoinServiceStub(channel)
            _, csr = pki.new_key_and_csr("x")
            denied = refusal(lambda: stub.Join(join_pb2.JoinRequest(token=token, csr_pem=csr)))
            assert denied.code() is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        ctl.stop()


def test_join_checks_the_controller_certificate(
    secure: TLSController, cluster_pki: ClusterPKI, tmp_path: Path
) -> None:
    token = secure.join_token("j4")
    result = join_cli(secure, token, tmp_path / "j4", ca_file=cluster_pki.foreign().ca_file)
    assert result.returncode != 0 and NOT_SIGNED in result.stderr, result.stderr
    # The token never reached the controller: it still works.
    assert join_cli(secure, token, tmp_path / "j4").returncode == 0


def node_writes(endpoint: str, credentials: Path, key: bytes) -> bool:
    """Whether the node's bundle may still write its own key in etcd."""

    async def put() -> bool:
        async with Etcd([endpoint], credentials=pki.Bundle(credentials), timeout=5) as client:
            try:
                await client.put(key, b"{}")
            except errors.PermissionDenied:
                return False
            return True

    return asyncio.run(put())


def test_a_node_rotates_by_joining_again_and_is_removed_for_good(
    secure: TLSController, tmp_path: Path
) -> None:
    key = Keys(secure.prefix).node("j6")
    old, new = tmp_path / "old", tmp_path / "new"
    assert join_cli(secure, secure.join_token("j6"), old).returncode == 0
    assert node_writes(secure.etcd_endpoint, old, key)

    # Rotation: a new join gives a new key, certificate and node token; the old
    # token stops working, the old certificate is still the node's until it expires.
    assert join_cli(secure, secure.join_token("j6"), new).returncode == 0
    assert (old / "tls.key").read_bytes() != (new / "tls.key").read_bytes()
    assert pki.Bundle(new).identity().common_name == "node.j6"
    with secure.channel() as channel:
        stale = refusal(lambda: register(channel, (old / "node-token").read_text().strip(), "j6"))
        assert stale.code() is grpc.StatusCode.UNAUTHENTICATED
        assert register(channel, (new / "node-token").read_text().strip(), "j6").session_id
    assert node_writes(secure.etcd_endpoint, new, key)

    removed = secure.admin("nodes", "remove", "j6")
    assert removed.returncode == 0, removed.stderr
    assert "Node 'j6' removed (1 token(s) revoked)" in removed.stdout
    with secure.channel() as channel:
        # The controller trusts a token it verified for a few seconds (auth cache_seconds).
        def refused() -> bool:
            try:
                register(channel, (new / "node-token").read_text().strip(), "j6")
            except grpc.RpcError as gone:
                assert gone.code() is grpc.StatusCode.UNAUTHENTICATED, gone
                return True
            return False

        eventually(refused, 20)
    assert not node_writes(secure.etcd_endpoint, new, key)
    # The operator can admit the host again.
    assert join_cli(secure, secure.join_token("j6"), tmp_path / "again").returncode == 0
    assert node_writes(secure.etcd_endpoint, tmp_path / "again", key)


# ------------------------------------------------------------------ a real agent


def test_a_joined_agent_registers_over_tls_and_runs_a_one_off(
    secure: TLSController, tmp_path: Path
) -> None:
    creds = tmp_path / "node-creds"
    joined = join_cli(secure, secure.join_token("tls-node"), creds)
    assert joined.returncode == 0, joined.stderr
    local = LocalCluster(secure, tmp_path / "cluster")
    # The agent gets no token and no API token in its environment: node-token it is.
    local.controller = dataclasses.replace(secure, token="")
    try:
        local.add_agent("tls-node", extra_args=("--credentials", str(creds)))
        not_after = pki.Bundle(creds).identity().not_after

        def listed() -> dict[str, object]:
            nodes = json.loads(secure.cli("nodes", "--json", check=True).stdout)
            node = next((n for n in nodes if n["name"] == "tls-node"), {})
            return node if node.get("certificate_not_after") else {}

        node = eventually(listed, timeout=60, interval=0.3)
        assert str(node["certificate_not_after"]).startswith(not_after.strftime("%Y-%m-%dT%H:%M"))
        table = secure.cli("nodes", check=True).stdout
        assert "CERT EXPIRES" in table and not_after.strftime("%Y-%m-%d") in table

        # slipway run: CLI -> controller (TLS) -> the agent's attach port (TLS, node cert).
        secure.cli("apps:create", "tlsrun", check=True)
        slug = asyncio.run(upload_slug(secure.nats_url))
        with Client(secure.address, secure.token, ca_file=secure.ca_file) as client:
            client.create_release(
                "tlsrun",
                types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
                {"worker": slug.process_types["worker"]},
            )
        done = secure.cli("run", "-a", "tlsrun", "echo", "over-tls", timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "over-tls"
    finally:
        local.close()  # the agent, its dynos and the controller


def test_the_attach_port_takes_controllers_only(
    secure: TLSController, cluster_pki: ClusterPKI, tmp_path: Path
) -> None:
    """An agent's AttachService on TLS refuses plaintext and non-controller certificates."""
    creds = cluster_pki.bundle(pki.Role.NODE, "att")
    port_file = tmp_path / "port"
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ATTACH_ONLY,
            str(creds.path),
            str(tmp_path / "data"),
            str(port_file),
        ],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        port = int(eventually(lambda: port_file.exists() and port_file.read_text(), timeout=30))
        target = f"127.0.0.1:{port}"

        def attach(channel: grpc.Channel) -> grpc.RpcError:
            stub = node_pb2_grpc.AttachServiceStub(channel)
            start = node_pb2.AttachInput(start=node_pb2.AttachStart(instance_id=uuid.uuid4().hex))
            return refusal(lambda: list(stub.Attach(iter([start]), timeout=10)))

        with grpc.insecure_channel(target) as plain:
            assert attach(plain).code() is grpc.StatusCode.UNAVAILABLE
        node_creds = tls.grpc_channel_credentials(cluster_pki.bundle(pki.Role.NODE, "other"))
        with grpc.secure_channel(target, node_creds) as channel:
            denied = attach(channel)
            assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "only controllers" in (denied.details() or "")
        ctl_creds = tls.grpc_channel_credentials(cluster_pki.bundle(pki.Role.CONTROLLER))
        with grpc.secure_channel(target, ctl_creds) as channel:
            # Past TLS and the role check: no such dyno here.
            assert attach(channel).code() is grpc.StatusCode.NOT_FOUND
    finally:
        agent.terminate()
        agent.wait(10)


# The AttachServer alone, on a node bundle, with an empty supervisor.
ATTACH_ONLY = """
import asyncio, sys
from dataclasses import replace
from pathlib import Path
from agent.attach import AttachServer
from agent.config import AgentConfig, Timings
from slipway.pki import Bundle

class NoDynos:
    def dyno(self, key):
        return None

async def main():
    creds, data, port_file = sys.argv[1:]
    config = AgentConfig(
        data_dir=Path(data), advertise_address="127.0.0.1", credentials=Bundle(Path(creds)),
        timings=Timings(attach_timeout=0.1),
    )
    server = AttachServer(config, NoDynos())
    task = asyncio.create_task(server.run())
    await server.ready.wait()
    Path(port_file).write_text(str(server.bound_port))
    await task

asyncio.run(main())
"""


# ------------------------------------------------------------------ JoinAPI in-process


class FakeContext:
    """What JoinAPI.Join needs of a servicer context: abort raises the status."""

    async def abort(self, code: grpc.StatusCode, message: str, trailers: object = ()) -> None:
        raise errors.from_status(code, message)


async def test_join_runs_the_hook_before_the_token_is_used_and_one_join_wins(
    etcd_endpoint: str, etcd_prefix: str, cluster_pki: ClusterPKI
) -> None:
    admitted: list[str] = []
    failing = True

    async def hook(node: str) -> None:
        if failing:
            raise errors.Unavailable("etcd user creation failed")
        admitted.append(node)

    async with Etcd([etcd_endpoint], credentials=cluster_pki.bundle(pki.Role.ROOT)) as etcd:
        keys = Keys(etcd_prefix)
        tokens = Tokens(etcd, keys)
        join_tokens = JoinTokens(etcd, keys)
        api = JoinAPI(join_tokens, tokens, cluster_pki.ca, on_node_admitted=hook)
        token, _ = await join_tokens.create("hooked", 60)

        def request() -> join_pb2.JoinRequest:
            _, csr = pki.new_key_and_csr("ignored")
            return join_pb2.JoinRequest(token=token, csr_pem=csr, advertise_address="10.1.2.3")

        # The hook refuses: the join fails and the token is still good.
        with pytest.raises(errors.Unavailable, match="user creation"):
            await api.Join(request(), FakeContext())  # type: ignore[arg-type]
        failing = False

        results = await asyncio.gather(
            *(api.Join(request(), FakeContext()) for _ in range(4)),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, join_pb2.JoinResponse)]
        lost = [r for r in results if isinstance(r, errors.Unauthenticated)]
        assert (len(won), len(lost)) == (1, 3), results
        reply = won[0]
        assert reply.node == "hooked" and "hooked" in admitted
        cert = x509.load_pem_x509_certificate(reply.certificate_pem)
        assert pki.identity_of(cert).common_name == "node.hooked"
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "10.1.2.3" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
        caller = await tokens.verify(reply.node_token)
        assert (caller.name, caller.node) == ("node.hooked", "hooked")
