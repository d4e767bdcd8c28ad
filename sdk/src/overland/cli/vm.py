"""``overland vm``: a site's VMs (its replica service's endpoint), after Hyper-V's New-VM, Start-VM,
Stop-VM, Get-VM, Remove-VM, and its serial console. Each command is a thin call of ``VmClient``."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from overland.cli.common import (
    DISK_FORMAT_HELP,
    DiskFormat,
    disk_spec,
    new_table,
    service_group,
    settings,
    show,
    show_json_line,
    show_list,
)
from overland.cli.params import UINT32_MAX, UINT64_MAX
from overland.client import VmClient
from overland.v1 import replica_pb2, vm_pb2

app = service_group(VmClient, "vm")

# The --nic keys: a single value each, or (LISTS) one per occurrence, in order.
NIC_KEYS = {
    "mac": "mac",
    "vsid": "vsid",
    "test-vsid": "test_vsid",
    "ip": "addresses",
    "gw": "gateway",
    "dns": "dns",
    "ca": "ca",
    "failover-ip": "failover_addresses",
    "failover-gw": "failover_gateway",
    "failover-dns": "failover_dns",
    "failover-ca": "failover_ca",
}
LISTS = {"addresses", "dns", "failover_addresses", "failover_dns"}
NUMBERS = {"vsid", "test_vsid"}
# The deadline of a graceful stop's call, beyond the stop's own timeout.
STOP_MARGIN = 30.0
MiB = 1024 * 1024


def _client(ctx: typer.Context) -> VmClient:
    return settings(ctx).client(VmClient)


def parse_nic(spec: str) -> replica_pb2.VmNic:
    """``mac=52:54:00:0b:00:0a,vsid=5001,ip=192.0.2.10/24,gw=192.0.2.1,dns=192.0.2.53``: a NIC from
    ``KEY=VALUE`` pairs (``ip``, ``dns`` and their ``failover-`` forms repeat). The service checks the
    values; this only takes the text apart."""
    nic = replica_pb2.VmNic()
    for item in spec.split(","):
        key, sep, value = item.strip().partition("=")
        field = NIC_KEYS.get(key)
        if not sep or field is None:
            raise typer.BadParameter(
                f"--nic takes KEY=VALUE pairs with KEY in {sorted(NIC_KEYS)}, got {item!r}"
            )
        if not value.isascii() and not _encodable(value):
            raise typer.BadParameter(f"--nic {key}: {value!r} is not text (it cannot be UTF-8)")
        if field in LISTS:
            getattr(nic, field).append(value)
        elif field in NUMBERS:
            if not (value.isascii() and value.isdigit()) or int(value) > UINT32_MAX:
                raise typer.BadParameter(f"--nic {key} must be a number, got {value!r}")
            setattr(nic, field, int(value))
        else:
            setattr(nic, field, value)
    return nic


def _encodable(text: str) -> bool:
    """Whether ``text`` is UTF-8 text (an argument undecodable bytes made may hold lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _state(vm: vm_pb2.Vm) -> str:
    return vm_pb2.VmState.Name(vm.state).removeprefix("VM_STATE_").lower()


VmName = Annotated[str, typer.Argument(help="The VM's name.")]


@app.command("new")
def new(
    ctx: typer.Context,
    name: VmName,
    *,
    disk: Annotated[list[str], typer.Option(help="NAME=PATH of a VHD; the first is the root. Repeat.")],
    disk_format: Annotated[DiskFormat, typer.Option("--format", help=DISK_FORMAT_HELP)] = DiskFormat.vhd,
    nic: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE,...: mac, vsid, ip, gw, dns, failover-ip, ... Repeat for several."),
    ] = None,
    cpus: Annotated[int, typer.Option(help="Virtual CPUs (default 1).", min=0, max=UINT32_MAX)] = 0,
    memory_mib: Annotated[
        int, typer.Option(help="Memory in MiB (default 256).", min=0, max=UINT64_MAX // MiB)
    ] = 0,
) -> None:
    """New-VM: define a VM at the site (it is created off)."""
    with _client(ctx) as client:
        show(
            ctx,
            client.create_vm(
                name=name,
                cpu_count=cpus,
                memory_bytes=memory_mib * MiB,
                disks=[disk_spec(d, disk_format) for d in disk],
                nics=[parse_nic(n) for n in nic or ()],
            ),
        )


@app.command("start")
def start(ctx: typer.Context, name: VmName) -> None:
    """Start-VM: returns once qemu runs it (the guest then boots)."""
    with _client(ctx) as client:
        show(ctx, client.start_vm(name=name))


@app.command("stop")
def stop(
    ctx: typer.Context,
    name: VmName,
    *,
    turn_off: Annotated[bool, typer.Option(help="Power off at once, without asking the guest.")] = False,
    timeout: Annotated[
        int, typer.Option(help="Seconds the guest has to shut down.", min=1, max=UINT32_MAX)
    ] = 120,
) -> None:
    """Stop-VM: an ACPI shutdown the guest must finish in time (or --turn-off)."""
    with _client(ctx) as client:
        waiting = client.with_options(timeout=max(client.config.timeout, timeout + STOP_MARGIN))
        show(ctx, waiting.stop_vm(name=name, turn_off=turn_off, timeout_seconds=timeout))


@app.command("get")
def get(ctx: typer.Context, name: VmName) -> None:
    """Get-VM NAME: its definition and state."""
    with _client(ctx) as client:
        show(ctx, client.get_vm(name=name))


@app.command("list")
def list_vms(ctx: typer.Context) -> None:
    """Get-VM: the site's VMs, one line each."""
    with _client(ctx) as client:
        vms = list(client.list_vms())
    current = settings(ctx)
    if current.json_output:
        show_list(ctx, vms)
        return
    table = new_table("name", "state", "replication", "pid", "accelerator", "ports", "last stop", title="VMs")
    for vm in vms:
        mode = vm_pb2.ReplicationMode.Name(vm.replication_mode).removeprefix("REPLICATION_MODE_").lower()
        pid = str(vm.pid) if vm.pid else ""
        table.add_row(
            vm.config.name, _state(vm), mode, pid, vm.accelerator, ", ".join(vm.ports), vm.last_stop
        )
    current.out.print(table)


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: VmName,
    *,
    delete_disks: Annotated[bool, typer.Option(help="Delete its disk files too.")] = False,
) -> None:
    """Remove-VM: the VM must be off; its disks stay unless --delete-disks."""
    with _client(ctx) as client:
        removed = client.delete_vm(name=name, delete_disks=delete_disks)
    if settings(ctx).json_output:
        show(ctx, removed)
    else:
        settings(ctx).out.print(f"removed {name}", highlight=False)


@app.command("console")
def console(
    ctx: typer.Context,
    name: VmName,
    *,
    offset: Annotated[int, typer.Option(help="Byte offset to start from.", min=0, max=UINT64_MAX)] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing what comes, until the VM is off.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --follow.")] = 0.5,
) -> None:
    """The VM's serial console (every run's, appended), raw; with --json, one object per chunk."""
    json_output = settings(ctx).json_output
    with _client(ctx) as client:
        while True:
            # Asked before reading: what an off VM printed is all there, so the last read gets it all.
            last = not follow or client.get_vm(name=name).state == vm_pb2.VM_STATE_OFF
            while True:
                chunk = client.get_console_log(name=name, offset=offset)
                if chunk.data:
                    if json_output:
                        show_json_line(chunk)
                    else:
                        sys.stdout.buffer.write(chunk.data)
                        sys.stdout.buffer.flush()
                offset = chunk.next_offset
                if offset >= chunk.size:
                    break
            if last:
                return
            time.sleep(interval)
