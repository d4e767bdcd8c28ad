"""``overland vswitch``: one host's agent — its status, VM ports, counters and copy of the table."""

from __future__ import annotations

import click

from overland.cli.common import service_group, settings, show, show_list, show_sections
from overland.client import VswitchClient

app = service_group(VswitchClient, "vswitch")


def _client(ctx: click.Context) -> VswitchClient:
    return settings(ctx).client(VswitchClient)


@app.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Host, PA, applied revision, datapath and MTUs, and what the table holds."""
    with _client(ctx) as client:
        show(ctx, client.get_agent_status(), title="agent")


@app.command("ports")
@click.pass_context
def ports(ctx: click.Context) -> None:
    """Get-VMNetworkAdapter, as the agent sees it: its VM ports (TAP devices)."""
    with _client(ctx) as client:
        show_list(ctx, client.list_ports(), title="ports")


@app.command("counters")
@click.pass_context
def counters(ctx: click.Context) -> None:
    """Packets and bytes each way, and drops by reason."""
    with _client(ctx) as client:
        show(ctx, client.get_counters(), title="counters")


@app.command("table")
@click.pass_context
def table(ctx: click.Context) -> None:
    """The agent's copy of the routing table, at the revision it has applied."""
    with _client(ctx) as client:
        dump = client.dump_table()
    sections = (
        "routing_domains",
        "virtual_subnets",
        "provider_addresses",
        "lookup_records",
        "customer_routes",
    )
    show_sections(ctx, dump, f"applied revision {dump.applied_revision}", sections)


@app.command("attach")
@click.option("--name", required=True, help="The TAP interface (at most 15 bytes).")
@click.option("--mac", required=True, help="The VM NIC's MAC; a lookup record on this host must have it.")
@click.option("--vsid", type=int, required=True, help="The VM NIC's VSID.")
@click.option("--vm", default="", help="The VM's name.")
@click.option("--netns", default="", help="A network namespace to move the interface into.")
@click.pass_context
def attach(ctx: click.Context, *, name: str, mac: str, vsid: int, vm: str, netns: str) -> None:
    """Connect-VMNetworkAdapter: attach a VM port."""
    with _client(ctx) as client:
        show(ctx, client.attach_port(name=name, mac=mac, vsid=vsid, vm_name=vm, netns=netns))


@app.command("detach")
@click.argument("name")
@click.pass_context
def detach(ctx: click.Context, name: str) -> None:
    """Disconnect-VMNetworkAdapter: detach the VM port NAME."""
    with _client(ctx) as client:
        detached = client.detach_port(name=name)
    if settings(ctx).json_output:
        show(ctx, detached)
    else:
        settings(ctx).out.print(f"detached {name}", highlight=False)


@app.command("extensions")
@click.pass_context
def extensions(ctx: click.Context) -> None:
    """Get-VMSwitchExtension: the ordered chain of switch extensions."""
    with _client(ctx) as client:
        show_list(ctx, client.list_extensions(), title="extensions")
