"""The agent's durable record of each dyno: DATA/dynos/{key}/record.json.

Written on every state change (atomically: write, fsync, rename), read once at
start to adopt running containers. The record, the runc state and the shim's
status file together say what happened while the agent was away.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.model import DynoSpec, DynoState
from slipway import log

logger = log.get("agent.records")


@dataclass
class DynoRecord:
    spec: DynoSpec
    container_id: str
    port: int = 0
    state: DynoState = DynoState.STARTING
    crashes: int = 0  # crashes in a row (drives the cool-off)
    restarts: int = 0  # restarts since the last reset (reported)
    started_at: float = 0.0
    changed_at: float = 0.0
    restart_at: float | None = None
    exit_status: int | None = None
    stopping: bool = False  # a stop was under way
    held: bool = False  # stopped on request; stays down
    # The dyno's own network (agent/network.py): its address and netns name while
    # attached; empty when it has none (host networking, or not running).
    address: str = ""
    netns: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"] = self.spec.to_json()
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DynoRecord:
        data = dict(obj)
        data["spec"] = DynoSpec.from_json(obj["spec"])
        data["state"] = DynoState(obj.get("state", "starting"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def save(path: Path, record: DynoRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(record.to_json(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_all(dynos_dir: Path) -> list[tuple[Path, DynoRecord]]:
    """Every readable record; unreadable ones are logged and skipped."""
    found: list[tuple[Path, DynoRecord]] = []
    if not dynos_dir.is_dir():
        return found
    for entry in sorted(dynos_dir.iterdir()):
        path = entry / "record.json"
        if not path.is_file():
            continue
        try:
            found.append((entry, DynoRecord.from_json(json.loads(path.read_text()))))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("unreadable dyno record", path=str(path), error=str(exc))
    return found
