"""Domain records <-> protobuf messages (the only place that knows both)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from controller.core.models import (
    RELEASE_FAILED,
    RELEASE_PENDING,
    RELEASE_SUCCEEDED,
    AppRecord,
    FormationItem,
    ReleaseRecord,
    SlugInfo,
)
from controller.core.sizes import DynoSize
from controller.store.dynos import DynoView, NodeView
from slipway import stackimage
from slipway.v1 import platform_pb2, types_pb2

_STATUS = {
    RELEASE_PENDING: types_pb2.RELEASE_STATUS_PENDING,
    RELEASE_SUCCEEDED: types_pb2.RELEASE_STATUS_SUCCEEDED,
    RELEASE_FAILED: types_pb2.RELEASE_STATUS_FAILED,
}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def app(record: AppRecord, web_url: str = "") -> types_pb2.App:
    return types_pb2.App(
        name=record.name,
        created_at=timestamp(record.created_at),
        current_release=record.current_release,
        buildpacks=record.buildpacks,
        stack=record.build_stack or stackimage.DEFAULT_STACK,
        web_url=web_url,
        owner=record.owner,
        team=record.team,
        id=record.id,
    )


def slug(info: SlugInfo) -> types_pb2.SlugRef:
    return types_pb2.SlugRef(
        digest=info.digest,
        size_bytes=info.size_bytes,
        stack=info.stack,
        source_version=info.source_version,
    )


def slug_from(msg: types_pb2.SlugRef) -> SlugInfo:
    return SlugInfo(
        digest=msg.digest,
        size_bytes=msg.size_bytes,
        stack=msg.stack,
        source_version=msg.source_version,
    )


def release(record: ReleaseRecord) -> types_pb2.Release:
    return types_pb2.Release(
        app=record.app,
        version=record.version,
        # Why a release phase failed has no field of its own: it reads with the description.
        description=f"{record.description}: {record.error}" if record.error else record.description,
        created_at=timestamp(record.created_at),
        config=record.config,
        slug=slug(record.slug),
        # The release command reads as the Procfile's "release" entry (CreateRelease takes it so).
        process_types={**record.process_types, "release": record.release_command}
        if record.release_command
        else record.process_types,
        status=_STATUS.get(record.status, types_pb2.RELEASE_STATUS_UNSPECIFIED),
        created_by=record.created_by,
    )


def formation(
    items: dict[str, FormationItem], process_types: dict[str, str]
) -> list[types_pb2.FormationEntry]:
    return [
        types_pb2.FormationEntry(
            type=ptype, quantity=item.quantity, size=item.size, command=process_types.get(ptype, "")
        )
        for ptype, item in sorted(items.items())
    ]


def size(s: DynoSize) -> types_pb2.DynoSize:
    return types_pb2.DynoSize(
        name=s.name, memory_mb=s.memory_mb, max_processes=s.max_processes, cpu_shares=s.cpu_shares
    )


def dyno(view: DynoView) -> platform_pb2.Dyno:
    p, s = view.placement, view.status
    msg = platform_pb2.Dyno(
        app=p.app,
        name=p.name,
        type=p.type,
        state=view.state,
        release=p.release,
        node=p.node,
        size=p.size,
        command=p.command,
        created_at=timestamp(p.created_at),
        instance_id=p.instance_id,
        memory_limit_bytes=p.memory_mb * 1024 * 1024,
        exit_status=-1,
    )
    if s is not None:
        msg.restarts = s.restarts
        msg.memory_bytes = s.memory_bytes
        msg.exit_status = s.exit_status
        if s.changed_at:
            msg.state_changed_at.CopyFrom(timestamp(s.changed_at))
        if s.state == "up" and s.port:
            msg.address = f"{s.address}:{s.port}"
    return msg


def node(view: NodeView) -> platform_pb2.Node:
    m = view.metrics
    msg = platform_pb2.Node(
        name=view.name,
        address=view.address,
        capacity_memory_mb=view.capacity_mb,
        reserved_memory_mb=view.reserved_mb,
        memory_total_bytes=int(m.get("memory_total_bytes", 0)),
        memory_used_bytes=int(m.get("memory_used_bytes", 0)),
        disk_total_bytes=int(m.get("disk_total_bytes", 0)),
        disk_used_bytes=int(m.get("disk_used_bytes", 0)),
        cpu_percent=float(m.get("cpu_percent", 0.0)),
        load1=float(m.get("load1", 0.0)),
        dynos=view.dynos,
        labels=view.labels,
        status="draining" if view.draining else "ready",
        stack=view.stack,
    )
    if m.get("at"):
        msg.last_heartbeat.CopyFrom(timestamp(float(m["at"])))
    if m.get("cert_not_after"):
        msg.certificate_not_after.CopyFrom(timestamp(float(m["cert_not_after"])))
    return msg
