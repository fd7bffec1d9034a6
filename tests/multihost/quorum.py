"""The clustered engines of the multi-host harness: 3 etcd members, 3 NATS servers.

Each member runs inside its own host (``nsenter`` execs the engine, so the pid
the harness holds is the engine's own and kill -9 hits it). Members are
restarted on their own data dirs and waited on until they are back in the
group, so the next fault again meets a full cluster. The probes here answer
the questions the fault tests ask: who leads etcd's raft group, who leads a
JetStream stream, are all stream copies current.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from slipway import buildproto, engines, logline, objstore, tls
from tests.harness import secure
from tests.harness.wait import eventually
from tests.multihost.net import Host

ETCD_PORT, ETCD_PEER_PORT = 2379, 2380
NATS_PORT, NATS_CLUSTER_PORT = 4222, 6222
REPLICAS = 3
# Every stream and bucket (OBJ_<bucket>) the platform keeps in JetStream.
STREAMS = [
    buildproto.STREAM,
    buildproto.EVENTS_STREAM,
    logline.STREAM,
    *(f"OBJ_{bucket}" for bucket in objstore.BUCKETS),
]


def in_host(engine: engines.Engine, host: Host) -> engines.Engine:
    """``engine`` with its command run inside ``host``."""
    engine.argv = host.argv(engine.argv)
    return engine


def again(engine: engines.Engine) -> engines.Engine:
    """A fresh handle on the same command, data dir and port (for a restart)."""
    return engines.Engine(engine.name, engine.argv, engine.data_dir, engine.host, engine.port)


@dataclass
class EtcdCluster:
    hosts: list[Host]
    workdir: Path
    members: dict[str, engines.Engine] = field(default_factory=dict)

    @property
    def endpoints(self) -> str:
        return ",".join(f"{h.address}:{ETCD_PORT}" for h in self.hosts)

    def start(self) -> None:
        initial = ",".join(f"{h.name}=https://{h.address}:{ETCD_PEER_PORT}" for h in self.hosts)
        for host in self.hosts:
            engine = secure.etcd_engine(
                self.workdir / host.name,
                host.address,
                client_port=ETCD_PORT,
                peer_port=ETCD_PEER_PORT,
                name=host.name,
                initial_cluster=initial,
                cluster_state="new",
            )
            self.members[host.name] = in_host(engine, host)
            # The client port opens before the group has a leader, so the
            # members can be started one after the other.
            self.members[host.name].start()
        eventually(lambda: self.status() is not None, 30, 0.2)

    def kill(self, name: str) -> None:
        self.members[name].kill()

    def restart(self, name: str) -> None:
        """Bring a killed member back on its data dir; it rejoins as itself."""
        self.members[name] = again(self.members[name])
        self.members[name].start()
        eventually(lambda: (self.member_status(name) or {}).get("leader"), 30, 0.2)

    def member_status(self, name: str) -> dict[str, Any] | None:
        """One member's own status (Maintenance.Status over gRPC, with the root
        certificate); None when it does not answer. Not the HTTP gateway: with
        client-certificate auth on, etcd refuses certificates sent to it."""
        if not self.members[name].running:
            return None
        address = next(h.address for h in self.hosts if h.name == name)
        credentials = tls.grpc_channel_credentials(secure.root())
        with grpc.secure_channel(f"{address}:{ETCD_PORT}", credentials) as channel:
            try:
                got = rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=5)
            except grpc.RpcError:
                return None
        return {"leader": got.leader, "header": {"member_id": got.header.member_id}}

    def status(self) -> dict[str, Any] | None:
        """The status of the first member that answers and knows a leader."""
        for name in self.members:
            got = self.member_status(name)
            if got and got.get("leader"):
                return got
        return None

    def leader(self) -> str:
        """Name of the running member that leads the raft group."""
        # Right after a fault (or on a loaded machine, where a TLS handshake can
        # take a while) no member may know a leader for a moment: wait for one.
        status = eventually(self.status, 30, 0.2)
        for name in self.members:
            own = self.member_status(name)
            if own is not None and own["header"]["member_id"] == status["leader"]:
                return name
        raise AssertionError(f"etcd leader {status['leader']} is not a running member")


@dataclass
class NatsCluster:
    hosts: list[Host]
    workdir: Path
    servers: dict[str, engines.Engine] = field(default_factory=dict)

    @property
    def urls(self) -> str:
        return ",".join(f"nats://{h.address}:{NATS_PORT}" for h in self.hosts)

    def start(self) -> None:
        routes = {h.name: f"nats://{h.address}:{NATS_CLUSTER_PORT}" for h in self.hosts}
        for host in self.hosts:
            engine = secure.nats_engine(
                self.workdir / host.name,
                host.address,
                port=NATS_PORT,
                cluster_port=NATS_CLUSTER_PORT,
                routes=[url for name, url in routes.items() if name != host.name],
                server_name=host.name,
                cluster_name="slipway-mh",
            )
            self.servers[host.name] = in_host(engine, host)
            self.servers[host.name].start()
        asyncio.run(self._create_streams())
        eventually(self.replicated, 60, 0.5)

    def kill(self, name: str) -> None:
        self.servers[name].kill()

    def restart(self, name: str) -> None:
        """Bring a killed server back on its store; wait until it holds current copies."""
        self.servers[name] = again(self.servers[name])
        self.servers[name].start()
        eventually(lambda: self.replicated(name), 60, 0.5)

    async def _create_streams(self) -> None:
        """Create every stream and bucket with 3 copies before any daemon can make it.

        A daemon finding a stream missing creates it with its own replica
        setting (1 unless told otherwise); on this cluster each stream must be
        kept 3 ways to survive a server.
        """
        nc = await secure.nats_connect(self.urls.split(","), name="mh-bootstrap")
        try:
            js = nc.jetstream(timeout=10)
            deadline = time.monotonic() + 60
            while True:  # JetStream answers once the servers elected a meta leader
                try:
                    await js.account_info()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            await buildproto.ensure_streams(js, replicas=REPLICAS)
            await logline.ensure_stream(js, REPLICAS)
            await objstore.ObjectStores(js, replicas=REPLICAS).ensure_buckets()
        finally:
            await nc.close()

    def replicated(self, member: str = "") -> bool:
        """Every stream has 3 copies, a leader and current followers (``member`` among them)."""
        try:
            return asyncio.run(self._replicated(member))
        except AssertionError:
            raise
        except Exception as exc:  # a server still starting answers with any of nats-py's errors
            raise AssertionError(f"JetStream not settled: {exc!r}") from exc

    async def _replicated(self, member: str) -> bool:
        nc = await secure.nats_connect(self.urls.split(","), name="mh-probe")
        try:
            js = nc.jetstream(timeout=5)
            for stream in STREAMS:
                info = await js.stream_info(stream)
                assert info.config.num_replicas == REPLICAS, (stream, info.config)
                cluster = info.cluster
                assert cluster is not None and cluster.leader, (stream, cluster)
                peers = cluster.replicas or []
                assert len(peers) == REPLICAS - 1, (stream, cluster)
                assert all(p.current and not p.offline for p in peers), (stream, cluster)
                assert not member or member in {cluster.leader, *(p.name for p in peers)}
            return True
        finally:
            await nc.close()

    def stream_leader(self, stream: str) -> str:
        """The server leading ``stream``'s raft group."""

        async def read() -> str:
            nc = await secure.nats_connect(self.urls.split(","), name="mh-probe")
            try:
                info = await nc.jetstream(timeout=5).stream_info(stream)
                assert info.cluster is not None and info.cluster.leader
                return str(info.cluster.leader)
            finally:
                await nc.close()

        return asyncio.run(read())
