"""The agent's vocabulary as plain dataclasses (protobuf stays at the edges).

DynoSpec    what the controller wants to run (one placement, immutable)
DynoState   starting | up | crashed | down, as Heroku users know them
DynoStatus  what the agent reports about one dyno at one moment
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class DynoState(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    CRASHED = "crashed"
    DOWN = "down"


@dataclass(frozen=True)
class DynoSpec:
    app: str
    name: str  # web.1, worker.2, run.3
    process_type: str
    release: int
    command: str
    env: dict[str, str] = field(default_factory=dict, hash=False)
    slug_digest: str = ""
    memory_mb: int = 512
    max_processes: int = 256
    # CPU weight from the dyno's size (cgroup cpu.shares); 0: the runtime default.
    cpu_shares: int = 0
    instance_id: str = ""  # unique per placement
    attached: bool = False
    slug_size: int = 0
    # Attached one-offs (`slipway run`): a terminal of rows x cols or pipes, and
    # the secret the AttachService requires (from the placement).
    tty: bool = False
    rows: int = 0
    cols: int = 0
    attach_token: str = field(default="", repr=False)

    @property
    def key(self) -> str:
        """Identity used for records, container ids and plans."""
        return self.instance_id

    @property
    def is_web(self) -> bool:
        return self.process_type == "web"

    @property
    def one_off(self) -> bool:
        # run.N: `slipway run`; release.N: the release phase; scheduler.N: a
        # scheduler job's run. None is ever restarted.
        return self.name.startswith(("run.", "release.", "scheduler."))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DynoSpec:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in obj.items() if k in known}
        data["env"] = dict(data.get("env") or {})
        return cls(**data)


@dataclass(frozen=True)
class DynoStatus:
    app: str
    name: str
    instance_id: str
    process_type: str
    release: int
    state: DynoState
    exit_status: int | None = None
    restarts: int = 0
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    port: int = 0
    container_id: str = ""
    changed_at: float = 0.0
    started_at: float = 0.0
    reason: str = ""
    # Being stopped on purpose: routes are withdrawn before SIGTERM is sent.
    stopping: bool = False
