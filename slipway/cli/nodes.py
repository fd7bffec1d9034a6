"""nodes: the agents, their capacity and usage."""

from __future__ import annotations

import time

import click

from slipway.cli.base import cli, json_option, with_client
from slipway.cli.output import age, emit_json, expiry, heading, table
from slipway.client import Client


@cli.command("nodes")
@json_option
@with_client
def nodes_list(client: Client, as_json: bool) -> None:
    """List nodes with stack, capacity, usage, last heartbeat and certificate expiry."""
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
            "STACK",
            "DYNOS",
            "RESERVED",
            "MEMORY USED",
            "CPU",
            "LOAD",
            "HEARTBEAT",
            "CERT EXPIRES",
        ],
        [
            [
                n.name,
                n.address,
                n.status,
                n.stack or "-",
                n.dynos,
                f"{n.reserved_memory_mb}/{n.capacity_memory_mb} MB",
                f"{n.memory_used_bytes // 2**20}/{n.memory_total_bytes // 2**20} MB"
                if n.memory_total_bytes
                else "-",
                f"{n.cpu_percent:.0f}%",
                f"{n.load1:.2f}",
                f"{age(n.last_heartbeat)} ago" if n.last_heartbeat.seconds else "-",
                expiry(n.certificate_not_after),
            ]
            for n in nodes
        ],
    )


@cli.command("nodes:drain")
@click.argument("node")
@click.option("--wait", is_flag=True, help="Wait until every dyno has moved off the node.")
@click.option("--timeout", default=600, show_default=True, help="Seconds --wait waits at most.")
@with_client
def nodes_drain(client: Client, node: str, wait: bool, timeout: int) -> None:
    """Move a node's dynos to other nodes before maintenance; nothing new lands on it."""
    remaining = client.drain_node(node).remaining_dynos
    click.echo(f"Draining {node}... {remaining} dyno(s) to move")
    if not wait:
        click.echo(
            f"Follow with `slipway nodes`; end the drain with `slipway nodes:undrain {node}`."
        )
        return
    deadline = time.monotonic() + timeout
    while remaining:
        if time.monotonic() > deadline:
            raise click.ClickException(f"{remaining} dyno(s) still on {node} after {timeout}s")
        time.sleep(1)
        remaining = next((n.dynos for n in client.list_nodes().nodes if n.name == node), 0)
    click.echo(f"{node} is drained: no dynos left. Stop its agent for maintenance.")


@cli.command("nodes:undrain")
@click.argument("node")
@with_client
def nodes_undrain(client: Client, node: str) -> None:
    """End a drain: the node takes new dynos again."""
    client.drain_node(node, undrain=True)
    click.echo(f"{node} takes new dynos again")
