"""Records agents write into etcd under their own lease, read by the controller.

nodes/{node}               NodeRecord: presence; gone when the node's lease expires
status/{app}/{instance}    StatusRecord: the dyno's actual state
routes/dynos/{app}/{inst}  route JSON (see slipway.keys) for up web dynos

And one the controller's leader writes for the agents:

addongrants/{app}          [{"address", "port"}]: where the app's dynos may open
                           TCP connections for its built-in add-ons (the firewall)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _load(cls: Any, data: bytes) -> Any:
    obj = json.loads(data)
    return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class NodeRecord:
    name: str
    address: str
    capacity_mb: int
    port_range: tuple[int, int] = (0, 0)
    labels: dict[str, str] = field(default_factory=dict)
    agent_version: str = ""
    started_at: float = 0.0
    # Port of the node's AttachService (slipway run) on `address`; 0: none.
    attach_port: int = 0
    # The stack its dynos run on (agent --stack): slugs of another stack go elsewhere.
    stack: str = ""

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> NodeRecord:
        record: NodeRecord = _load(cls, data)
        record.port_range = tuple(record.port_range)  # type: ignore[assignment]
        return record


@dataclass
class StatusRecord:
    app: str
    name: str
    instance_id: str
    node: str
    process_type: str
    release: int
    state: str  # starting | up | crashed | down
    port: int = 0
    address: str = ""
    restarts: int = 0
    exit_status: int = -1
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    changed_at: float = 0.0
    started_at: float = 0.0
    reason: str = ""
    container_id: str = ""

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> StatusRecord:
        record: StatusRecord = _load(cls, data)
        return record


def route_value(app: str, dyno: str, address: str, node: str, release: int) -> bytes:
    return _dumps({"app": app, "dyno": dyno, "address": address, "node": node, "release": release})


def addon_grants_value(endpoints: Iterable[tuple[str, int]]) -> bytes:
    items = [{"address": a, "port": p} for a, p in sorted(set(endpoints))]
    return json.dumps(items, separators=(",", ":")).encode()


def addon_grants_of(data: bytes) -> list[tuple[str, int]]:
    """The (address, port) pairs of an ``addongrants/{app}`` value; unreadable items are skipped."""
    try:
        items = json.loads(data)
    except ValueError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            address, port = item.get("address"), item.get("port")
            if isinstance(address, str) and isinstance(port, int) and 0 < port < 65536:
                out.append((address, port))
    return out
