"""A real etcd on TLS with client certificates, sealed (users, roles, auth on)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slipway import engines, etcdauth, pki
from slipway.etcd import Etcd
from tests.harness.pki import ClusterPKI

PREFIX = "/slipway"


@dataclass
class SealedEtcd:
    engine: engines.Engine
    pki: ClusterPKI
    prefix: str = PREFIX

    @property
    def endpoint(self) -> str:
        return f"https://{self.engine.host}:{self.engine.port}"

    @property
    def plain_endpoint(self) -> str:
        return f"{self.engine.host}:{self.engine.port}"

    def client(self, role: pki.Role, name: str = "", *, timeout: float = 5.0) -> Etcd:
        """A connection presenting the certificate of ``role`` (and node ``name``)."""
        return Etcd([self.endpoint], credentials=self.pki.bundle(role, name), timeout=timeout)


async def _seal(endpoint: str, bundle: pki.Bundle, prefix: str) -> None:
    async with Etcd([endpoint], credentials=bundle) as root:
        await etcdauth.seal(root, prefix)


@contextlib.contextmanager
def sealed_etcd(root: Path, prefix: str = PREFIX) -> Iterator[SealedEtcd]:
    """Start the member with an ENGINE bundle and seal it with a ROOT one."""
    cluster_pki = ClusterPKI(root / "pki")
    engine = engines.etcd(root / "etcd", tls=cluster_pki.bundle(pki.Role.ENGINE))
    engine.start()
    try:
        sealed = SealedEtcd(engine, cluster_pki, prefix)
        asyncio.run(_seal(sealed.endpoint, cluster_pki.bundle(pki.Role.ROOT), prefix))
        yield sealed
    finally:
        engine.stop()
