"""The Heroku Platform API (v3), the pure part: resources in Heroku's field
names, its error bodies and statuses, and Range / Next-Range paging.

Paging as Heroku does it: a ``Range: FIELD [START]..[END]; max=N, order=asc``
header asks for up to N items (default 200, at most 1000) sorted by FIELD,
from START on (``]START`` excludes it); when more remain the answer is 206
with ``Next-Range: ]LAST..; max=N`` to ask for the rest.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from slipway import errors
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import types_pb2

DEFAULT_PAGE = 200
MAX_PAGE = 1000
# Ids for resources that have none of their own, stable across calls.
_IDS = uuid.UUID("5b0a1c5e-3f0e-4c55-9d3e-51ea7a0c0de3")


def iso(ts: Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    when = datetime.fromtimestamp(ts.seconds, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_id(kind: str, *parts: str) -> str:
    return str(uuid.uuid5(_IDS, "/".join((kind, *parts))))


def account(who: pb.WhoAmIResponse) -> dict[str, Any]:
    name = who.email or who.token_name
    return {
        "id": stable_id("account", name),
        "email": who.email or None,
        "name": name,
        "allow_tracking": False,
        "beta": False,
        "two_factor_authentication": False,
        "verified": True,
        "sms_number": None,
        "default_organization": None,
        "default_team": None,
        # Slipway's own: what the token may do.
        "admin": who.admin,
        "scope": who.scope,
    }


def app(record: types_pb2.App) -> dict[str, Any]:
    created = iso(record.created_at)
    return {
        "id": record.id or stable_id("app", record.name),
        "name": record.name,
        "created_at": created,
        "updated_at": created,
        "released_at": created if record.current_release else None,
        "web_url": record.web_url or None,
        "git_url": None,
        "buildpack_provided_description": None,
        "maintenance": False,
        "acm": False,
        "archived_at": None,
        "repo_size": None,
        "slug_size": None,
        "stack": {"id": stable_id("stack", record.stack), "name": record.stack},
        "build_stack": {"id": stable_id("stack", record.stack), "name": record.stack},
        "region": {"id": stable_id("region", "local"), "name": "local"},
        "space": None,
        "internal_routing": None,
        "owner": {"id": stable_id("account", record.owner), "email": record.owner}
        if record.owner
        else None,
        "team": {"id": stable_id("team", record.team), "name": record.team}
        if record.team
        else None,
        "organization": None,
    }


def domain(d: pb.Domain) -> dict[str, Any]:
    created = iso(d.created_at)
    return {
        "id": d.id or stable_id("domain", d.app, d.hostname),
        "app": {"id": stable_id("app", d.app), "name": d.app},
        "hostname": d.hostname,
        "kind": "heroku" if d.kind == "default" else "custom",
        "cname": d.cname or None,
        "status": d.status,
        "acm_status": d.acm_status or None,
        "acm_status_reason": d.acm_status_reason or None,
        "sni_endpoint": {"id": stable_id("sni", d.app, d.certificate), "name": d.certificate}
        if d.certificate
        else None,
        "created_at": created,
        "updated_at": created,
    }


_RELEASE_STATUS = {
    types_pb2.RELEASE_STATUS_PENDING: "pending",
    types_pb2.RELEASE_STATUS_SUCCEEDED: "succeeded",
    types_pb2.RELEASE_STATUS_FAILED: "failed",
}


def release(r: types_pb2.Release, current: int) -> dict[str, Any]:
    created = iso(r.created_at)
    return {
        "id": stable_id("release", r.app, str(r.version)),
        "app": {"id": stable_id("app", r.app), "name": r.app},
        "version": r.version,
        "description": r.description,
        "status": _RELEASE_STATUS.get(r.status, "succeeded"),
        "current": r.version == current,
        "created_at": created,
        "updated_at": created,
        "user": {"id": stable_id("account", r.created_by), "email": r.created_by},
        "slug": {"id": r.slug.digest} if r.slug.digest else None,
        "addon_plan_names": [],
        "output_stream_url": None,
    }


def formation(app_name: str, entry: types_pb2.FormationEntry) -> dict[str, Any]:
    return {
        "id": stable_id("formation", app_name, entry.type),
        "app": {"id": stable_id("app", app_name), "name": app_name},
        "type": entry.type,
        "quantity": entry.quantity,
        "size": entry.size,
        "command": entry.command,
        "created_at": None,
        "updated_at": None,
    }


# Ours -> Heroku's dyno states (crashed, down, idle, starting, up).
_DYNO_STATES = {"pending": "starting", "lost": "down"}


def dyno(d: pb.Dyno) -> dict[str, Any]:
    return {
        "id": d.instance_id or stable_id("dyno", d.app, d.name),
        "app": {"id": stable_id("app", d.app), "name": d.app},
        "name": d.name,
        "type": d.type,
        "state": _DYNO_STATES.get(d.state, d.state),
        "size": d.size,
        "command": d.command,
        "release": {"id": stable_id("release", d.app, str(d.release)), "version": d.release},
        "attach_url": None,
        "created_at": iso(d.created_at),
        "updated_at": iso(d.state_changed_at) or iso(d.created_at),
    }


def quantity_change(type_name: str, value: object, size: object) -> pb.FormationChange:
    """One formation update as Heroku takes it: a number, a string of one, or a
    relative "+1" / "-1"."""
    if size is not None and not isinstance(size, str):
        raise errors.InvalidArgument("size must be a string")
    change = pb.FormationChange(type=type_name, size=size or "")
    if value is None:
        if not size:
            raise errors.InvalidArgument(f"give a quantity or a size for {type_name}")
        change.delta = 0
        return change
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise errors.InvalidArgument('quantity must be a number or a string such as "+1"')
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?\d{1,6}", text):
        raise errors.InvalidArgument(f"quantity {value!r} is not a number or a +N / -N change")
    if text[0] in "+-":
        change.delta = int(text)
    else:
        change.quantity = int(text)
    return change


# -- errors -------------------------------------------------------------------------

# gRPC status -> (HTTP status, Heroku's error id).
_STATUSES: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (422, "invalid_params"),
    grpc.StatusCode.ALREADY_EXISTS: (422, "invalid_params"),
    grpc.StatusCode.FAILED_PRECONDITION: (422, "invalid_params"),
    grpc.StatusCode.OUT_OF_RANGE: (422, "invalid_params"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthorized"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (422, "invalid_params"),
    grpc.StatusCode.ABORTED: (409, "conflict"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, "unavailable"),
}


def status_of(code: grpc.StatusCode) -> tuple[int, str]:
    return _STATUSES.get(code, (500, "internal_server_error"))


def status_of_error(exc: errors.SlipwayError) -> tuple[int, str]:
    return status_of(exc.code)


# -- paging -------------------------------------------------------------------------

_RANGE = re.compile(
    r"^\s*(?P<field>[a-z_]+)\s*(?P<start>[^;]*?)\.\.(?P<end>[^;]*?)\s*(;(?P<opts>.*))?$"
)


@dataclass(frozen=True)
class Range:
    field: str
    start: str = ""
    exclusive: bool = False
    end: str = ""
    max: int = DEFAULT_PAGE
    descending: bool = False


def parse_range(header: str, fields: Sequence[str]) -> Range:
    """A Range header over one of ``fields`` (the first when none is given)."""
    if not header.strip():
        return Range(fields[0])
    match = _RANGE.match(header)
    if match is None or match.group("field") not in fields:
        raise errors.InvalidArgument(
            f"Range must look like '{fields[0]} ..; max=200' over one of: {', '.join(fields)}"
        )
    start = match.group("start").strip()
    exclusive = start.startswith("]")
    size, descending = DEFAULT_PAGE, False
    for option in (match.group("opts") or "").replace(",", ";").split(";"):
        key, _, value = option.strip().partition("=")
        if key == "max":
            if not value.isdigit() or not 0 < int(value) <= MAX_PAGE:
                raise errors.InvalidArgument(f"Range max must be 1 to {MAX_PAGE}")
            size = int(value)
        elif key == "order":
            if value not in ("asc", "desc"):
                raise errors.InvalidArgument("Range order must be asc or desc")
            descending = value == "desc"
    return Range(
        match.group("field"),
        start.lstrip("]"),
        exclusive,
        match.group("end").strip(),
        size,
        descending,
    )


def page(
    items: Sequence[dict[str, Any]], wanted: Range, key: Callable[[dict[str, Any]], Any]
) -> tuple[list[dict[str, Any]], str | None]:
    """The items of one page, and the Next-Range header when more remain."""
    ordered = sorted(items, key=key, reverse=wanted.descending)
    if wanted.start:
        try:
            start = type(key(ordered[0]))(wanted.start) if ordered else wanted.start
        except ValueError as exc:
            raise errors.InvalidArgument(
                f"Range start {wanted.start!r} is not a {wanted.field}"
            ) from exc

        def after(item: dict[str, Any]) -> bool:
            value = key(item)
            if wanted.descending:
                return value < start if wanted.exclusive else value <= start
            return value > start if wanted.exclusive else value >= start

        ordered = [item for item in ordered if after(item)]
    chosen = ordered[: wanted.max]
    if len(ordered) <= wanted.max:
        return chosen, None
    last = key(chosen[-1])
    order = ", order=desc" if wanted.descending else ""
    return chosen, f"{wanted.field} ]{last}..; max={wanted.max}{order}"
