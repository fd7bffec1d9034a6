"""nodes: the agents, their capacity and usage."""

from __future__ import annotations

import click

from slipway.cli.base import cli, json_option, with_client
from slipway.cli.output import age, emit_json, heading, table
from slipway.client import Client


@cli.command("nodes")
@json_option
@with_client
def nodes_list(client: Client, as_json: bool) -> None:
    """List nodes with capacity, usage and last heartbeat."""
    nodes = list(client.list_nodes().nodes)
    if as_json:
        emit_json(nodes)
        return
    if not nodes:
        click.echo("No nodes. Start `slipway-agent` on a host to add one.")
        return
    heading("Nodes")
    table(
        [
            "NODE",
            "ADDRESS",
            "STATUS",
            "DYNOS",
            "RESERVED",
            "MEMORY USED",
            "CPU",
            "LOAD",
            "HEARTBEAT",
        ],
        [
            [
                n.name,
                n.address,
                n.status,
                n.dynos,
                f"{n.reserved_memory_mb}/{n.capacity_memory_mb} MB",
                f"{n.memory_used_bytes // 2**20}/{n.memory_total_bytes // 2**20} MB"
                if n.memory_total_bytes
                else "-",
                f"{n.cpu_percent:.0f}%",
                f"{n.load1:.2f}",
                f"{age(n.last_heartbeat)} ago" if n.last_heartbeat.seconds else "-",
            ]
            for n in nodes
        ],
    )
