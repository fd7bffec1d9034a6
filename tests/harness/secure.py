"""The test session's cluster CA, and engines started sealed with it.

Every engine and daemon the harness starts is on TLS with its own bundle, as
in production; tests that talk to etcd or NATS directly do it as an operator
(the ``root`` bundle). The session's conftest installs one CA for the whole
run (:func:`install`); code outside pytest (benchmarks) gets a CA made on
first use in a temp dir.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
import nats.aio.client

from slipway import engines, etcdauth, objstore, pki, tls
from slipway.etcd import CLUSTER_NAME, Etcd
from tests.harness.pki import ClusterPKI

_session: ClusterPKI | None = None


def install(root: Path) -> ClusterPKI:
    global _session
    _session = ClusterPKI(root)
    return _session


def session() -> ClusterPKI:
    global _session
    if _session is None:
        _session = ClusterPKI(Path(tempfile.mkdtemp(prefix="slipway-pki-")))
    return _session


def bundle(role: pki.Role, name: str = "", hosts: tuple[str, ...] = ()) -> pki.Bundle:
    return session().bundle(role, name, hosts)


def root() -> pki.Bundle:
    return bundle(pki.Role.ROOT)


def ca_file() -> Path:
    return session().ca_file


def etcd_engine(data_dir: Path, host: str = "127.0.0.1", **options: object) -> engines.Engine:
    """A member's certificate names its address and the name every member of a
    cluster shares (clients of several members check each against it)."""
    member = bundle(pki.Role.ENGINE, hosts=(host, CLUSTER_NAME))
    return engines.etcd(data_dir, host=host, tls=member, **options)  # type: ignore[arg-type]


def nats_engine(data_dir: Path, host: str = "127.0.0.1", **options: object) -> engines.Engine:
    server = bundle(pki.Role.ENGINE, hosts=(host,))
    return engines.nats(data_dir, host=host, tls=server, **options)  # type: ignore[arg-type]


def root_etcd(endpoints: Sequence[str]) -> Etcd:
    """An operator's connection (``async with root_etcd([...]) as etcd``)."""
    return Etcd(list(endpoints), credentials=root())


async def seal_async(endpoints: Sequence[str], prefix: str) -> None:
    async with root_etcd(endpoints) as etcd:
        await etcdauth.seal(etcd, prefix)


def seal(endpoints: Sequence[str], prefix: str) -> None:
    """Users and roles for ``prefix``, then auth on (idempotent): from sync fixtures."""
    asyncio.run(seal_async(endpoints, prefix))


async def nats_connect(servers: Sequence[str] | str, name: str = "test") -> nats.aio.client.Client:
    """An operator's NATS connection."""
    listed = [servers] if isinstance(servers, str) else list(servers)
    return await objstore.connect(listed, name=name, credentials=root())


def channel_credentials() -> grpc.ChannelCredentials:
    """What a CLI user's channel to the controller trusts: the cluster CA."""
    return tls.grpc_channel_credentials(None, ca_file=ca_file())


def flags(role: pki.Role, name: str = "") -> list[str]:
    """A daemon's ``--credentials`` flag for ``role``."""
    return ["--credentials", str(bundle(role, name).path)]


def admit_node(endpoints: Sequence[str], prefix: str, node: str) -> None:
    """The etcd user and role of ``node``, for an agent started with a bundle
    issued directly (no controller to join through)."""

    async def admit() -> None:
        async with root_etcd(endpoints) as etcd:
            await etcdauth.ensure_node(etcd, prefix, node)

    asyncio.run(admit())


def agent_join(controller: str, token: str, out: Path, advertise: str, env: dict[str, str]) -> Path:
    """``slipway-agent join`` as a new host runs it; the node's credentials directory."""
    argv = [str(Path(sys.executable).parent / "slipway-agent"), "join", "--controller", controller]
    argv += ["--ca-file", str(ca_file()), "--token", token, "--credentials", str(out)]
    argv += ["--advertise-address", advertise]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"slipway-agent join failed ({done.returncode}): {done.stderr}")
    return out
