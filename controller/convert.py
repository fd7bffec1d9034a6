"""Domain records <-> protobuf messages (the only place that knows both)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from controller.models import (
    RELEASE_FAILED,
    RELEASE_PENDING,
    RELEASE_SUCCEEDED,
    AppRecord,
    FormationItem,
    ReleaseRecord,
    SlugInfo,
)
from controller.sizes import DynoSize
from slipway.v1 import types_pb2

_STATUS = {
    RELEASE_PENDING: types_pb2.RELEASE_STATUS_PENDING,
    RELEASE_SUCCEEDED: types_pb2.RELEASE_STATUS_SUCCEEDED,
    RELEASE_FAILED: types_pb2.RELEASE_STATUS_FAILED,
}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def app(record: AppRecord, base_domain: str = "") -> types_pb2.App:
    return types_pb2.App(
        name=record.name,
        created_at=timestamp(record.created_at),
        current_release=record.current_release,
        buildpacks=record.buildpacks,
        stack=record.stack,
        web_url=f"http://{record.name}.{base_domain}/" if base_domain else "",
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
        description=record.description,
        created_at=timestamp(record.created_at),
        config=record.config,
        slug=slug(record.slug),
        process_types=record.process_types,
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
