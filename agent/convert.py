"""Protobuf <-> the agent's dataclasses. Protobuf types go no further than this module
and link.py."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from agent.metrics import HostMetrics
from agent.model import DynoSpec, DynoState, DynoStatus
from slipway.v1 import node_pb2 as pb

_STATE_TO_PB = {
    DynoState.STARTING: pb.DYNO_STATE_STARTING,
    DynoState.UP: pb.DYNO_STATE_UP,
    DynoState.CRASHED: pb.DYNO_STATE_CRASHED,
    DynoState.DOWN: pb.DYNO_STATE_DOWN,
}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    if seconds > 0:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def spec_from_pb(a: pb.DynoAssignment) -> DynoSpec:
    return DynoSpec(
        app=a.app,
        name=a.name,
        process_type=a.process_type,
        release=int(a.release),
        command=a.command,
        env=dict(a.env),
        slug_digest=a.slug_digest,
        memory_mb=int(a.memory_mb),
        max_processes=int(a.max_processes),
        cpu_shares=int(a.cpu_shares),
        instance_id=a.instance_id,
        attached=a.attached,
        slug_size=int(a.slug_size_bytes),
        tty=a.attach.tty,
        rows=int(a.attach.rows),
        cols=int(a.attach.cols),
        attach_token=a.attach.token,
    )


def spec_to_pb(s: DynoSpec) -> pb.DynoAssignment:
    return pb.DynoAssignment(
        app=s.app,
        name=s.name,
        process_type=s.process_type,
        release=s.release,
        command=s.command,
        env=s.env,
        slug_digest=s.slug_digest,
        slug_size_bytes=s.slug_size,
        memory_mb=s.memory_mb,
        max_processes=s.max_processes,
        cpu_shares=s.cpu_shares,
        instance_id=s.instance_id,
        attached=s.attached,
        attach=pb.AttachSpec(tty=s.tty, rows=s.rows, cols=s.cols, token=s.attach_token)
        if s.attached
        else None,
    )


def status_to_pb(s: DynoStatus) -> pb.DynoStatus:
    return pb.DynoStatus(
        app=s.app,
        name=s.name,
        instance_id=s.instance_id,
        process_type=s.process_type,
        release=s.release,
        state=_STATE_TO_PB[s.state],
        exit_status=-1 if s.exit_status is None else s.exit_status,
        restarts=s.restarts,
        memory_bytes=s.memory_bytes,
        memory_limit_bytes=s.memory_limit_bytes,
        port=s.port,
        container_id=s.container_id,
        changed_at=timestamp(s.changed_at),
        started_at=timestamp(s.started_at),
        reason=s.reason,
    )


def heartbeat(
    host: HostMetrics,
    dynos: list[DynoStatus],
    *,
    capacity_mb: int,
    reserved_mb: int,
    now: float,
) -> pb.Heartbeat:
    return pb.Heartbeat(
        cpu_percent=host.cpu_percent,
        memory_total_bytes=host.memory_total,
        memory_used_bytes=host.memory_used,
        disk_total_bytes=host.disk_total,
        disk_used_bytes=host.disk_used,
        load1=host.load1,
        load5=host.load5,
        load15=host.load15,
        capacity_memory_mb=capacity_mb,
        reserved_memory_mb=reserved_mb,
        dynos=[status_to_pb(d) for d in dynos],
        sent_at=timestamp(now),
    )
