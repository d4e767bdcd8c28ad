"""``overland vswitch``: one host's agent — its status, VM ports, counters and copy of the table."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from overland.cli.common import service_group, settings, show, show_list, show_sections
from overland.cli.params import mac as mac_address
from overland.client import VswitchClient
from overland.defaults import MAX_VSID, MIN_VSID

app = service_group(VswitchClient, "vswitch")


def _client(ctx: typer.Context) -> VswitchClient:
    return settings(ctx).client(VswitchClient)


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Host, PA, applied revision, datapath and MTUs, and what the table holds."""
    with _client(ctx) as client:
        show(ctx, client.get_agent_status(), title="agent")


@app.command("ports")
def ports(ctx: typer.Context) -> None:
    """Get-VMNetworkAdapter, as the agent sees it: its VM ports (TAP devices)."""
    with _client(ctx) as client:
        show_list(ctx, client.list_ports(), title="ports")


@app.command("counters")
def counters(ctx: typer.Context) -> None:
    """Packets and bytes each way, and drops by reason."""
    with _client(ctx) as client:
        show(ctx, client.get_counters(), title="counters")


@app.command("table")
def table(ctx: typer.Context) -> None:
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


class Backend(enum.StrEnum):
    tap_fd = "tap-fd"
    tap_kernel = "tap-kernel"


@app.command("attach")
def attach(
    ctx: typer.Context,
    *,
    name: Annotated[str, typer.Option(help="The TAP interface (at most 15 bytes).")],
    mac: Annotated[
        str,
        typer.Option(help="The VM NIC's MAC; a lookup record on this host must have it.", parser=mac_address),
    ],
    vsid: Annotated[int, typer.Option(help="The VM NIC's VSID.", min=MIN_VSID, max=MAX_VSID)],
    vm: Annotated[str, typer.Option(help="The VM's name.")] = "",
    netns: Annotated[str, typer.Option(help="A network namespace to move the interface into (tap-fd).")] = "",
    backend: Annotated[
        Backend,
        typer.Option(
            help="tap-fd: the agent owns the TAP (a namespace VM); tap-kernel: qemu opens it (ifname=NAME)."
        ),
    ] = Backend.tap_fd,
) -> None:
    """Connect-VMNetworkAdapter: attach a VM port."""
    full_backend = "PORT_BACKEND_" + backend.value.upper().replace("-", "_")
    with _client(ctx) as client:
        show(
            ctx,
            client.attach_port(name=name, mac=mac, vsid=vsid, vm_name=vm, netns=netns, backend=full_backend),
        )


@app.command("detach")
def detach(ctx: typer.Context, name: str) -> None:
    """Disconnect-VMNetworkAdapter: detach a VM port."""
    with _client(ctx) as client:
        detached = client.detach_port(name=name)
    if settings(ctx).json_output:
        show(ctx, detached)
    else:
        settings(ctx).out.print(f"detached {name}", highlight=False)


@app.command("extensions")
def extensions(ctx: typer.Context) -> None:
    """Get-VMSwitchExtension: the ordered chain of switch extensions."""
    with _client(ctx) as client:
        show_list(ctx, client.list_extensions(), title="extensions")
