"""Entry point of the ``slipway`` command."""

from __future__ import annotations

# Importing the command modules registers their commands on the group.
from slipway.cli import (  # noqa: F401
    access,
    addons,
    apps,
    auth,
    builds,
    config_vars,
    domains,
    drains,
    logs,
    nodes,
    pg,
    ps,
    redis,
    releases,
    run,
    scheduler,
    teams,
    up,
)
from slipway.cli.base import cli


def main() -> None:
    cli(prog_name="slipway")


if __name__ == "__main__":
    main()
