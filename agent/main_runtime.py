"""Wiring: from an AgentConfig to the Runtime the supervisor runs on."""

from __future__ import annotations

from agent.config import AgentConfig
from agent.dyno import Runtime
from agent.logs import LogSink
from agent.slugcache import ObjectStoreFetch, SlugCache
from slipway.clock import SystemClock
from slipway.oci import HostStack, Runc


def build_runtime(config: AgentConfig) -> tuple[Runtime, ObjectStoreFetch]:
    """The runtime plus the slug fetcher (whose connection the caller closes)."""
    fetch = ObjectStoreFetch(config.nats_servers)
    rt = Runtime(
        config=config,
        runc=Runc(config.state_root, binary=config.runc_binary),
        stack=HostStack(config.data_dir),
        slugs=SlugCache(config.data_dir, fetch),
        sink=LogSink(config.nats_servers, maxsize=config.log_queue_size),
        clock=SystemClock(),
    )
    return rt, fetch
