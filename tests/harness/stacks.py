"""The stacks tests run sandboxes on: the default stack image's flavours, as the
daemons use them (built by `make setup`; a missing image fails with the command
that builds it)."""

from __future__ import annotations

from pathlib import Path

from slipway.oci import Stack
from slipway.stackimage import DEFAULT_STACK, open_stack


def build_stack(state_dir: Path) -> Stack:
    return open_stack(DEFAULT_STACK, "build", state_dir)


def run_stack(state_dir: Path) -> Stack:
    return open_stack(DEFAULT_STACK, "run", state_dir)
