"""Wiring: from an AgentConfig to the Runtime the supervisor runs on."""

from __future__ import annotations

from agent.config import AgentConfig
from agent.dyno import Runtime
from agent.logs import LogSink
from agent.network import DynoNetwork
from agent.slugcache import ObjectStoreFetch, SlugCache
from slipway.clock import SystemClock
from slipway.cni import NetOptions, SandboxNetwork
from slipway.cni.sandboxnet import resolv_conf_text, resolvers
from slipway.oci import Runc
from slipway.stackimage import open_stack


def build_network(config: AgentConfig) -> DynoNetwork | None:
    if config.dyno_network == "host":
        return None
    options = NetOptions(
        subnet=config.dyno_subnet,
        public_ports=config.router_ports,
        router_sources=config.router_sources,
        denied=config.deny_cidrs,
    )
    return DynoNetwork(SandboxNetwork(config.data_dir / "net", options))


def build_runtime(config: AgentConfig) -> tuple[Runtime, ObjectStoreFetch]:
    """The runtime plus the slug fetcher (whose connection the caller closes)."""
    fetch = ObjectStoreFetch(config.nats_servers, credentials=config.credentials)
    network = build_network(config)
    # Inside its own netns a dyno cannot use a resolver on the host's loopback.
    resolv = resolv_conf_text(resolvers()) if network is not None else None
    rt = Runtime(
        config=config,
        runc=Runc(config.state_root, binary=config.runc_binary),
        stack=open_stack(config.stack, "run", config.data_dir, resolv_conf=resolv),
        network=network,
        slugs=SlugCache(config.data_dir, fetch),
        sink=LogSink(
            config.nats_servers, maxsize=config.log_queue_size, credentials=config.credentials
        ),
        clock=SystemClock(),
    )
    return rt, fetch
