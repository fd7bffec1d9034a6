"""The scheduler's pure core: ``plan(desired, cluster, now) -> Plan``.

Level-based: it is handed the whole desired state (each app's current release
and formation) and the whole actual state (live nodes, placements, dyno
states) and says which placements to add and remove. No I/O; the reconciler
(controller/loops/reconciler.py) loads the inputs from etcd and applies the plan.

Rules, in the order they apply:
- a placement on a node that is gone (lease expired) is lost: removed, and a
  replacement is placed elsewhere (replace before the old one is confirmed dead,
  the Cloud Foundry way: the node may only be partitioned);
- every ``type.N`` wanted by a formation gets one placement on the current
  release and size; a placement on an older release or another size is kept
  until its replacement is up (start new, then stop old), so a web app never
  drops to zero up dynos during a deploy;
- a placement on a draining node is replaced elsewhere the same way;
- daily cycling (Heroku's "every 24 h plus a random 0-216 min"): a formation
  placement that has lived ``cycle_seconds`` plus a jitter of up to 15 % of it
  is replaced the same way (a new one, then the old once the new is up; at
  once if the old one is not up, as it serves nothing). The jitter comes from
  a hash of the instance id, so every controller (a new leader too) computes
  the same deadline and nothing is written for it. An app cycles one dyno at a
  time: none starts while any of its dynos has a replacement in flight;
- a restart (``ps:restart``) marks placements ``restart_requested``; each is
  replaced the same way (new, then old once the new is up; at once if the old
  is not up), so even an app with ``web=1`` keeps serving through a restart, as
  with Heroku's preboot; all the marked dynos of an app restart together;
- placements no formation wants any more are removed; one-off dynos are left
  alone (they end on their own) unless their node is gone;
- a new placement goes to a live, non-draining node with enough free memory,
  preferring the node with the fewest dynos of the same app and type, then of
  the same app, then the most free memory, so each type spreads over nodes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

UP = "up"
STARTING = "starting"
CRASHED = "crashed"
DOWN = "down"
# Cycling jitter, as a fraction of the period: Heroku's 216 min of 24 h.
CYCLE_JITTER = 0.15


@dataclass(frozen=True)
class ProcessWant:
    type: str
    quantity: int
    size: str
    memory_mb: int
    max_processes: int
    cpu_shares: int = 0  # 0: the runtime's default weight


@dataclass(frozen=True)
class AppWant:
    app: str
    release: int
    slug_digest: str
    # Process types the release defines (type -> command).
    commands: dict[str, str]
    processes: tuple[ProcessWant, ...]
    # The stack the slug was built for; it runs only on nodes of that stack
    # ("" in records written before slugs named it: any node).
    stack: str = ""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str
    capacity_mb: int
    draining: bool = False
    stack: str = ""  # the run stack its agent has ("" from agents that did not say)


@dataclass(frozen=True)
class Placement:
    app: str
    name: str  # web.1
    type: str
    release: int
    node: str
    instance_id: str
    memory_mb: int
    max_processes: int
    size: str
    created_at: float
    # "formation", "oneoff" (run.N, release.N; never rescheduled, never replaced)
    # or "attached" (a one-off whose stdio a client holds: `slipway run`)
    kind: str = "formation"
    command: str = ""
    # The size's CPU weight when placed (0 in records written before it
    # existed: the runtime default). Not compared by plan(): a changed weight
    # reaches running dynos with their next placement (a new release, a daily
    # cycle), not as one restart of every dyno.
    cpu_shares: int = 0
    # Attached one-offs: a terminal (rows x cols) or pipes, and the secret the
    # node's AttachService requires (never shown by the API).
    tty: bool = False
    rows: int = 0
    cols: int = 0
    attach_token: str = field(default="", repr=False)
    # Set by ps:restart: plan() replaces this placement, new before old.
    restart_requested: bool = False
    # One-offs the leader stops this many seconds after created_at (scheduler
    # dynos: their job's interval, as on Heroku); 0: no limit.
    stop_after: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Placement:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})

    @property
    def index(self) -> int:
        _, _, n = self.name.rpartition(".")
        return int(n) if n.isdigit() else 0


@dataclass(frozen=True)
class Cluster:
    nodes: dict[str, NodeInfo]
    placements: tuple[Placement, ...]
    # instance_id -> state reported by its agent (missing: not reported yet)
    states: dict[str, str] = field(default_factory=dict)


@dataclass
class Unplaced:
    app: str
    name: str
    memory_mb: int
    reason: str


@dataclass
class Plan:
    add: list[Placement] = field(default_factory=list)
    remove: list[Placement] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)
    lost: list[Placement] = field(default_factory=list)
    # Placements whose daily cycle starts with this plan (each is in remove now
    # or once its replacement in add is up): the reconciler logs "Cycling".
    cycled: list[Placement] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove)


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


class _Capacity:
    """Free memory and spread counts per node, updated as the plan places dynos."""

    def __init__(self, nodes: Iterable[NodeInfo], placements: Iterable[Placement]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.used: dict[str, int] = defaultdict(int)
        self.same_type: dict[tuple[str, str, str], int] = defaultdict(int)
        self.same_app: dict[tuple[str, str], int] = defaultdict(int)
        for p in placements:
            self.take(p)

    def take(self, p: Placement) -> None:
        self.used[p.node] += p.memory_mb
        self.same_type[(p.node, p.app, p.type)] += 1
        self.same_app[(p.node, p.app)] += 1

    def release(self, p: Placement) -> None:
        self.used[p.node] -= p.memory_mb
        self.same_type[(p.node, p.app, p.type)] -= 1
        self.same_app[(p.node, p.app)] -= 1

    def free(self, node: str) -> int:
        return self.nodes[node].capacity_mb - self.used[node]

    def runs_stack(self, stack: str) -> bool:
        return any(_stack_fits(n, stack) for n in self.nodes.values())

    def choose(self, app: str, ptype: str, memory_mb: int, stack: str = "") -> str | None:
        candidates = [
            n.name
            for n in self.nodes.values()
            if not n.draining and self.free(n.name) >= memory_mb and _stack_fits(n, stack)
        ]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda n: (
                self.same_type[(n, app, ptype)],
                self.same_app[(n, app)],
                -self.free(n),
                n,
            ),
        )


def _stack_fits(node: NodeInfo, stack: str) -> bool:
    return not stack or not node.stack or node.stack == stack


def cycle_deadline(p: Placement, period: float) -> float:
    """When a dyno is due for its daily cycle: ``period`` plus a jitter after it was placed.

    The jitter, in [0, CYCLE_JITTER * period), is a hash of the instance id
    (sha256: Python's own ``hash`` differs between processes).
    """
    digest = hashlib.sha256(p.instance_id.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return p.created_at + period * (1 + CYCLE_JITTER * fraction)


@dataclass(frozen=True)
class _Cycles:
    """Formation placements being cycled, by instance id."""

    # Cycles that start with this plan: at most one per app.
    starting: frozenset[str] = frozenset()
    # Due placements whose replacement already exists (a newer one of the same name).
    in_flight: frozenset[str] = frozenset()

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self.starting or instance_id in self.in_flight


def _cycles(
    by_name: Mapping[tuple[str, str], list[Placement]], now: float, period: float
) -> _Cycles:
    if period <= 0:
        return _Cycles()
    in_flight: set[str] = set()
    busy: set[str] = set()  # apps with a replacement in flight (cycle, deploy or drain)
    due: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for (app, _), group in by_name.items():
        if len(group) > 1:
            busy.add(app)
            newest = max(group, key=lambda p: (p.created_at, p.instance_id))
            in_flight.update(
                p.instance_id for p in group if p is not newest and cycle_deadline(p, period) <= now
            )
        elif (deadline := cycle_deadline(group[0], period)) <= now:
            due[app].append((deadline, group[0].instance_id))
    starting = {min(pairs)[1] for app, pairs in due.items() if app not in busy}
    return _Cycles(frozenset(starting), frozenset(in_flight))


def plan(
    desired: Iterable[AppWant],
    cluster: Cluster,
    now: float,
    new_id: Callable[[], str] = _new_id,
    *,
    cycle_seconds: float = 0.0,
) -> Plan:
    """``cycle_seconds``: daily cycling period (0: never cycle)."""
    result = Plan()
    live = [p for p in cluster.placements if p.node in cluster.nodes]
    result.lost = [p for p in cluster.placements if p.node not in cluster.nodes]
    result.remove.extend(result.lost)
    capacity = _Capacity(cluster.nodes.values(), live)

    by_name: dict[tuple[str, str], list[Placement]] = defaultdict(list)
    for p in live:
        if p.kind == "formation":
            by_name[(p.app, p.name)].append(p)
    cycles = _cycles(by_name, now, cycle_seconds)
    wanted: set[tuple[str, str]] = set()

    for app in sorted(desired, key=lambda a: a.app):
        if not app.slug_digest:
            continue  # nothing deployed yet: nothing to run
        for proc in app.processes:
            command = app.commands.get(proc.type, "")
            if not command:
                continue
            for index in range(1, proc.quantity + 1):
                name = f"{proc.type}.{index}"
                wanted.add((app.app, name))
                _converge_one(
                    app,
                    proc,
                    name,
                    command,
                    by_name[(app.app, name)],
                    cluster,
                    capacity,
                    result,
                    now,
                    new_id,
                    cycles,
                )

    for (app_name, name), placements in sorted(by_name.items()):
        if (app_name, name) not in wanted:
            for p in placements:
                result.remove.append(p)
                capacity.release(p)
    return result


def _converge_one(
    app: AppWant,
    proc: ProcessWant,
    name: str,
    command: str,
    existing: list[Placement],
    cluster: Cluster,
    capacity: _Capacity,
    result: Plan,
    now: float,
    new_id: Callable[[], str],
    cycles: _Cycles,
) -> None:
    def fits(p: Placement) -> bool:
        return (
            p.release == app.release
            and p.size == proc.size
            and p.memory_mb == proc.memory_mb
            and not cluster.nodes[p.node].draining
            and p.instance_id not in cycles
            and not p.restart_requested
        )

    current = sorted((p for p in existing if fits(p)), key=lambda p: (p.created_at, p.instance_id))
    stale = [p for p in existing if not fits(p)]
    # A starting cycle's placement is its name's only one: it is replaced (or,
    # with no room beside it, stopped first) below.
    result.cycled.extend(p for p in stale if p.instance_id in cycles.starting)
    # Two placements for one name on the current release: keep the oldest.
    for extra in current[1:]:
        result.remove.append(extra)
        capacity.release(extra)
    keeper = current[0] if current else None

    if keeper is None:
        node = capacity.choose(app.app, proc.type, proc.memory_mb, app.stack)
        if node is None and stale:
            # No room to start the new copy beside the old: stop first, then start.
            for p in stale:
                result.remove.append(p)
                capacity.release(p)
            stale = []
            node = capacity.choose(app.app, proc.type, proc.memory_mb, app.stack)
        if node is None:
            reason = f"no node has {proc.memory_mb} MB free for {proc.size}"
            if not capacity.runs_stack(app.stack):
                reason = (
                    f"no node runs stack {app.stack}, which the slug was built for "
                    f"(agents choose theirs with --stack)"
                )
            result.unplaced.append(Unplaced(app.app, name, proc.memory_mb, reason))
            return
        keeper = Placement(
            app=app.app,
            name=name,
            type=proc.type,
            release=app.release,
            node=node,
            instance_id=new_id(),
            memory_mb=proc.memory_mb,
            max_processes=proc.max_processes,
            cpu_shares=proc.cpu_shares,
            size=proc.size,
            created_at=now,
            command=command,
        )
        result.add.append(keeper)
        capacity.take(keeper)

    if stale and cluster.states.get(keeper.instance_id) == UP:
        retire = stale
    else:
        # A cycled or restarted dyno that is not up (crashed, starting) serves
        # nothing: no need to wait for its replacement.
        retire = [
            p
            for p in stale
            if (p.instance_id in cycles or p.restart_requested)
            and cluster.states.get(p.instance_id) != UP
        ]
    for p in retire:
        result.remove.append(p)
        capacity.release(p)


def choose_node(
    nodes: Iterable[NodeInfo],
    placements: Iterable[Placement],
    app: str,
    ptype: str,
    memory_mb: int,
    stack: str = "",
) -> str | None:
    """Where one extra dyno (a one-off such as ``release.N``) fits, by the same rules as plan()."""
    return _Capacity(nodes, placements).choose(app, ptype, memory_mb, stack)
