"""The supervisor's reconciler: a pure function from (desired, actual, now) to a Plan.

Dynos are matched by ``instance_id`` (one placement). A placement is
immutable: a new release or a move is a new instance id, so "same id,
different spec" is left alone rather than restarted behind the controller's
back. Crash restarts are part of the plan too: a crashed formation dyno whose
cool-off has passed is restarted; one-off dynos never are.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.model import DynoSpec, DynoState


@dataclass(frozen=True)
class Actual:
    """What the supervisor knows of one dyno, reduced to what planning needs."""

    spec: DynoSpec
    state: DynoState
    active: bool  # a container is running or being launched
    stopping: bool = False
    restart_at: float | None = None  # crashed: when the cool-off ends
    held: bool = False  # stopped on request (ps:stop); not restarted


@dataclass(frozen=True)
class Plan:
    start: tuple[DynoSpec, ...] = ()
    stop: tuple[str, ...] = ()  # keys no longer desired
    restart: tuple[str, ...] = ()  # crashed keys whose cool-off has ended
    wake_at: float | None = None  # earliest pending restart, for the loop timer

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.restart)


def plan(desired: list[DynoSpec], actual: dict[str, Actual], now: float) -> Plan:
    wanted = {spec.key: spec for spec in desired}
    start = tuple(spec for key, spec in sorted(wanted.items()) if key not in actual)
    stop = tuple(key for key, a in sorted(actual.items()) if key not in wanted and not a.stopping)
    restart: list[str] = []
    wake_at: float | None = None
    for key, a in sorted(actual.items()):
        if key not in wanted or a.stopping or a.active or a.held:
            continue
        if a.state is not DynoState.CRASHED or a.spec.one_off or a.restart_at is None:
            continue
        if a.restart_at <= now:
            restart.append(key)
        elif wake_at is None or a.restart_at < wake_at:
            wake_at = a.restart_at
    return Plan(start=start, stop=stop, restart=tuple(restart), wake_at=wake_at)
