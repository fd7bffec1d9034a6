"""Printing: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def emit_json(value: Any) -> None:
    if isinstance(value, Message):
        value = to_dict(value)
    elif isinstance(value, list):
        value = [to_dict(v) if isinstance(v, Message) else v for v in value]
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def age(ts: Timestamp) -> str:
    if not ts.seconds:
        return "-"
    seconds = max(0, int(time.time() - ts.seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def expiry(ts: Timestamp) -> str:
    """A certificate's expiry: its date and how far off (``-`` when unset)."""
    if not ts.seconds:
        return "-"
    left = ts.seconds - time.time()
    date = datetime.fromtimestamp(ts.seconds).strftime("%Y-%m-%d")
    if left <= 0:
        return f"{date} (EXPIRED)"
    return f"{date} ({int(left // 86400)}d)"


def heading(text: str) -> None:
    click.echo(f"=== {text}")
