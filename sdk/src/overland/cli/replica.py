"""``overland replica``: Hyper-V Replica style commands against a site's replica service.

Each command is a thin call of ``ReplicaClient`` (or, at the DR site, of its receiver); every command
names its VM with ``--vm``. What the output looks like is ``overland.cli.replica_view``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import grpc
import typer

from overland.cli import replica_view as view
from overland.cli.common import (
    DISK_FORMAT_HELP,
    EXIT_CODES,
    DiskFormat,
    apply_changes,
    disk_spec,
    service_group,
    settings,
    show,
    show_json_line,
    show_list,
    show_mapping,
)
from overland.cli.exits import EXIT_ERROR
from overland.cli.groups import new_typer
from overland.cli.params import INT64_MAX, UINT32_MAX, UINT64_MAX
from overland.cli.params import interval as interval_seconds
from overland.client import ReplicaClient, ReplicaReceiverClient
from overland.records import enum_value
from overland.replication import wait_cycle, write_export
from overland.v1 import replica_pb2

app = service_group(ReplicaClient, "replica")


class InitialMethod(enum.StrEnum):
    network = "network"
    external_media = "external-media"
    existing_copy = "existing-copy"


class Compression(enum.StrEnum):
    auto = "auto"
    zstd = "zstd"
    off = "off"


SERVER_HELP = "The DR site's replica endpoint, host:port."
FREQUENCY_HELP = "Seconds between cycles: 30, 300 or 900."
POINTS_HELP = "Additional hourly recovery points, 0..24."
COMPRESSION_HELP = (
    "auto: zstd where a chunk compresses and that makes the transfer faster; zstd: every chunk; off."
)
BANDWIDTH_HELP = "Bytes per second; 0 is unlimited."
VmOption = Annotated[str, typer.Option("--vm", help="The VM's name.")]


def _compression(mode: Compression) -> str:
    return enum_value(mode.value, replica_pb2.Compression, "COMPRESSION_")


def _client(ctx: typer.Context) -> ReplicaClient:
    return settings(ctx).client(ReplicaClient)


@app.command("enable")
def enable(
    ctx: typer.Context,
    *,
    vm: Annotated[str, typer.Option(help="The VM's name.")],
    disk: Annotated[
        list[str] | None,
        typer.Option(help="NAME=PATH of a VHD; repeat for several. A VM defined at the site: its own."),
    ] = None,
    disk_format: Annotated[DiskFormat, typer.Option("--format", help=DISK_FORMAT_HELP)] = DiskFormat.vhd,
    replica_server: Annotated[str, typer.Option(help=SERVER_HELP)],
    frequency: Annotated[int, typer.Option(help=FREQUENCY_HELP, min=0, max=UINT32_MAX)] = 300,
    recovery_points: Annotated[int, typer.Option(help=POINTS_HELP, min=0, max=UINT32_MAX)] = 0,
    compression: Annotated[Compression, typer.Option(help=COMPRESSION_HELP)] = Compression.auto,
    no_compression: Annotated[bool, typer.Option(help="The same as --compression off.")] = False,
    bandwidth_limit: Annotated[int, typer.Option(help=BANDWIDTH_HELP, min=0, max=UINT64_MAX)] = 0,
    initial_method: Annotated[InitialMethod, typer.Option(help="How the first copy travels.")] = (
        InitialMethod.network
    ),
    export_path: Annotated[str, typer.Option(help="With external-media: where to export.")] = "",
) -> None:
    """Enable-VMReplication. The site first runs test-connection's checks and refuses a DR site that
    fails one (unless the first copy goes by external media)."""
    settings_message = replica_pb2.ReplicationSettings(
        frequency_seconds=frequency,
        additional_recovery_points=recovery_points,
        compression_mode=_compression(Compression.off if no_compression else compression),
        bandwidth_limit_bytes_per_second=bandwidth_limit,
        replica_server=replica_server,
        initial_method=enum_value(
            initial_method.value, replica_pb2.InitialReplicationMethod, "INITIAL_REPLICATION_METHOD_"
        ),
        export_path=export_path,
    )
    machine = replica_pb2.VirtualMachine(name=vm, disks=[disk_spec(d, disk_format) for d in disk or ()])
    with _client(ctx) as client:
        show(ctx, client.enable_replication(vm=machine, settings=settings_message))


@app.command("status")
def status(
    ctx: typer.Context,
    *,
    vm: Annotated[str | None, typer.Option("--vm", help="One VM; all when omitted.")] = None,
    watch: Annotated[
        bool, typer.Option(help="Refresh until Ctrl-C, with a progress bar per running cycle.")
    ] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between refreshes with --watch.", parser=interval_seconds)
    ] = 2.0,
    count: Annotated[
        int,
        typer.Option(
            help="With --watch: stop after this many refreshes; 0 is endless.", min=0, max=INT64_MAX
        ),
    ] = 0,
) -> None:
    """Measure-VMReplication: state, health (with its reasons), last sync, last cycle and RPO per VM.
    With --json: an array, or with --watch one JSON object per VM and refresh (JSON lines)."""
    current = settings(ctx)
    with _client(ctx) as client:

        def fetch() -> list[replica_pb2.Replication]:
            return [client.get_replication(vm_name=vm)] if vm else list(client.list_replications())

        if not watch:
            replications = fetch()
            if current.json_output:
                show_list(ctx, replications)
                return
            _print_status(ctx, replications)
            return
        refreshes = 0
        if current.json_output:
            while not count or refreshes < count:
                for replication in fetch():
                    show_json_line(replication)
                refreshes += 1
                if not count or refreshes < count:
                    time.sleep(interval)
            return
        _watch_status(ctx, fetch, interval, count)


def _print_status(ctx: typer.Context, replications: list[replica_pb2.Replication]) -> None:
    out = settings(ctx).out
    out.print(view.status_table(replications, time.time_ns()), width=min(out.width, view.STATUS_WIDTH))
    for line in view.health_lines(replications):
        out.print(line, highlight=False, markup=False, width=min(out.width, view.STATUS_WIDTH))


def _watch_status(
    ctx: typer.Context, fetch: Callable[[], list[replica_pb2.Replication]], interval: float, count: int
) -> None:
    """The status table and a progress bar (bytes, rate, ETA) per VM whose cycle transfers, redrawn
    every ``interval`` seconds (rich's live display, loaded only here)."""
    from rich.console import Group  # noqa: PLC0415 - see overland.cli.common on importing rich late
    from rich.live import Live  # noqa: PLC0415

    out = settings(ctx).out
    progress = view.new_progress()
    bars = view.CycleBars(progress)
    refreshes = 0
    with Live(console=out, refresh_per_second=4) as live:
        while not count or refreshes < count:
            replications = fetch()
            running = [r.cycle for r in replications if r.cycle.state == replica_pb2.CYCLE_STATE_RUNNING]
            for cycle in running:
                bars.show(cycle)
            bars.drop_others({cycle.vm_name for cycle in running})
            table = view.status_table(replications, time.time_ns())
            lines = "\n".join(view.health_lines(replications))
            live.update(Group(table, lines, progress) if lines else Group(table, progress))
            refreshes += 1
            if not count or refreshes < count:
                time.sleep(interval)


def _vm_command(
    name: str, doc: str, method_name: str, group: typer.Typer | None = None, **fields: bool
) -> None:
    """A command of ``group`` (the replica group by default) taking ``--vm``, that calls
    ``method_name`` with it (and ``fields``) and shows the answer."""

    def command(ctx: typer.Context, *, vm: VmOption) -> None:
        with _client(ctx) as client:
            show(ctx, getattr(client, method_name)(vm_name=vm, **fields))

    command.__doc__ = doc
    (group or app).command(name)(command)


_vm_command("pause", "Suspend-VMReplication.", "pause_replication")
_vm_command("resume", "Resume-VMReplication.", "resume_replication")
_vm_command(
    "resync", "Resume-VMReplication -Resynchronize: compare and resend what differs.", "resync_replication"
)
_vm_command(
    "disable", "Remove-VMReplication: stop replicating the VM (the DR copy stays).", "disable_replication"
)


@app.command("replicate-now")
def replicate_now(
    ctx: typer.Context,
    *,
    vm: VmOption,
    wait: Annotated[
        bool, typer.Option(help="Wait for the cycle to end, with a progress bar (bytes, rate, ETA).")
    ] = False,
) -> None:
    """Queue one replication cycle now instead of waiting for the interval; prints the queued cycle
    (its id) at once, or with --wait follows it until it ends (exit status: its outcome's)."""
    current = settings(ctx)
    with _client(ctx) as client:
        cycle = client.replicate_now(vm_name=vm)
        if not wait:
            if current.json_output:
                show(ctx, cycle)
            else:
                words = f"{vm}: cycle {cycle.id} queued (replicate-now --vm {vm} --wait follows it)"
                current.out.print(words, highlight=False)
            return
        if current.json_output:
            show(ctx, wait_cycle(client, cycle))
            return
        progress = view.new_progress()
        bars = view.CycleBars(progress)
        with progress:
            done = wait_cycle(client, cycle, bars.show)
        current.out.print(f"{vm}: cycle {done.id}: {view.cycle_words(done)}", highlight=False)


@app.command("set")
def set_replication(
    ctx: typer.Context,
    *,
    vm: VmOption,
    frequency: Annotated[int | None, typer.Option(help=FREQUENCY_HELP, min=0, max=UINT32_MAX)] = None,
    recovery_points: Annotated[int | None, typer.Option(help=POINTS_HELP, min=0, max=UINT32_MAX)] = None,
    compression: Annotated[Compression | None, typer.Option(help=COMPRESSION_HELP)] = None,
    bandwidth_limit: Annotated[int | None, typer.Option(help=BANDWIDTH_HELP, min=0, max=UINT64_MAX)] = None,
    replica_server: Annotated[
        str | None,
        typer.Option(help="Move to this DR site: one that holds the VM at this primary's sequence."),
    ] = None,
    resync: Annotated[
        bool, typer.Option(help="With --replica-server: resynchronize with a site at another sequence.")
    ] = False,
) -> None:
    """Set-VMReplication: change the settings given, from the next cycle on, without a resync."""
    given = {
        "frequency_seconds": frequency,
        "additional_recovery_points": recovery_points,
        "compression_mode": compression,
        "bandwidth_limit_bytes_per_second": bandwidth_limit,
        "replica_server": replica_server,
    }
    fields = [name for name, value in given.items() if value is not None]
    if not fields:
        raise typer.BadParameter("name at least one setting to change", param_hint="options")
    new = replica_pb2.ReplicationSettings(compression_mode=_compression(compression) if compression else None)
    apply_changes(new, {name: value for name, value in given.items() if name != "compression_mode"})
    with _client(ctx) as client:
        show(ctx, client.set_replication(vm_name=vm, settings=new, fields=fields, resync=resync))


@app.command("test-connection")
def connection_test(
    ctx: typer.Context,
    *,
    replica_server: Annotated[str, typer.Option(help=SERVER_HELP)],
    vm: Annotated[str | None, typer.Option("--vm", help="Check the room for this VM's disks too.")] = None,
) -> None:
    """Test-VMReplicationConnection: reachability, TLS, authorization and free space at the DR site,
    checked from this site (--endpoint), each with its own message. The exit status is the first
    failed check's."""
    current = settings(ctx)
    with _client(ctx) as client:
        tested = client.test_replication_connection(replica_server=replica_server, vm_name=vm or "")
    if current.json_output:
        show(ctx, tested)
    else:
        current.out.print(view.connection_table(tested), width=min(current.out.width, view.STATUS_WIDTH))
    failed = next((c for c in tested.checks if c.result == replica_pb2.CHECK_RESULT_FAILED), None)
    if failed is not None:
        code = getattr(grpc.StatusCode, failed.error_code, grpc.StatusCode.UNKNOWN)
        raise typer.Exit(EXIT_CODES.get(code, EXIT_ERROR))


def _receiver(ctx: typer.Context) -> ReplicaReceiverClient:
    """The DR site's receiver (this group's --endpoint), for the commands its administrator runs there."""
    return settings(ctx).client(ReplicaReceiverClient)


@app.command("import")
def import_initial(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="The export file, as a path on the DR host.")],
    *,
    primary: Annotated[str, typer.Option(help="The primary it came from (picks the storage location).")],
) -> None:
    """Import-VMInitialReplication: at the DR site (--endpoint of the DR replica service), import an
    initial replica exported to external media at the primary. Waits for the import, however long."""
    with _receiver(ctx) as client:
        show(ctx, client.import_initial_replica(path=path, primary=primary))


@app.command("export-recovery-point")
def export_recovery_point(
    ctx: typer.Context,
    *,
    vm: VmOption,
    point: Annotated[
        str,
        typer.Option(
            # The same name as failover's; --point is what issue and habit call it.
            "--recovery-point",
            "--point",
            help="The point's id (VM@SEQUENCE, from recovery-points) or sequence.",
        ),
    ],
    to: Annotated[Path, typer.Option(help="The VHD file to write (it must not exist).")],
    disk: Annotated[str, typer.Option(help="The disk, for a VM with several.")] = "",
    primary: Annotated[
        str, typer.Option(help="The primary the replica is from, if several have that VM.")
    ] = "",
) -> None:
    """At the DR site (--endpoint of the DR replica service): write one disk of a recovery point to a
    VHD file that qemu-img opens, equal to the disk at the point's cut, with a progress bar."""
    if to.exists() or to.is_symlink():
        raise typer.BadParameter(f"{to} exists: remove it or choose another file", param_hint="'--to'")
    current = settings(ctx)
    with _receiver(ctx) as client:
        pieces = client.export_recovery_point(vm_name=vm, point_id=point, disk=disk, primary=primary)
        if current.json_output:
            written = write_export(pieces, to)
        else:
            with view.new_progress() as progress:
                written = write_export(pieces, to, view.FileBar(progress, f"{vm} {point}"))
    summary = {"vm_name": vm, "disk": written.disk, "sequence": written.sequence, "path": str(to)}
    show_mapping(ctx, {**summary, "file_bytes": written.file_bytes, "data_bytes": written.data_bytes})


@app.command("recovery-points")
def recovery_points(ctx: typer.Context, *, vm: VmOption) -> None:
    """Get-VMSnapshot -SnapshotType Replica: the recovery points kept for a VM, newest first."""
    current = settings(ctx)
    with _client(ctx) as client:
        points = list(client.list_recovery_points(vm_name=vm))
    if current.json_output:
        show_list(ctx, points)
        return
    current.out.print(view.points_table(points, time.time_ns(), f"recovery points of {vm}"))


failover_app = new_typer("failover", "Start-, Stop- and Complete-VMFailover, at the site where the VM is.")
app.add_typer(failover_app)


def recovery_point_sequence(text: str) -> int:
    """``--recovery-point``: a point's sequence or its id (``VM@SEQUENCE``, as recovery-points lists)."""
    number = text.rpartition("@")[2]
    if not number.isascii() or not number.isdigit() or int(number) > UINT64_MAX:
        raise typer.BadParameter(f"--recovery-point takes a sequence or an id VM@SEQUENCE, got {text!r}")
    return int(number)


@failover_app.command("start")
def failover_start(
    ctx: typer.Context,
    *,
    vm: VmOption,
    as_test: Annotated[
        bool, typer.Option("--as-test", help="A test failover: '<VM> - Test', isolated.")
    ] = False,
    prepare: Annotated[
        bool, typer.Option("--prepare", help="At the primary: prepare a planned failover (the VM off).")
    ] = False,
    recovery_point: Annotated[
        str, typer.Option(help="The recovery point (sequence or VM@SEQUENCE); the latest when omitted.")
    ] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Fail over although the primary answers (two copies may run).")
    ] = False,
    leave_off: Annotated[
        bool, typer.Option("--leave-off", help="Define the failover VM but do not start it.")
    ] = False,
) -> None:
    """Start-VMFailover: a test (--as-test) or a failover at the DR site; --prepare at the primary."""
    point = recovery_point_sequence(recovery_point) if recovery_point else 0
    with _client(ctx) as client:
        answer = client.start_vm_failover(
            vm_name=vm,
            as_test=as_test,
            prepare=prepare,
            recovery_point=point,
            force=force,
            leave_off=leave_off,
        )
    for warning in answer.warnings:
        typer.echo(f"overland: warning: {warning}", err=True)
    show(ctx, answer)


_vm_command(
    "stop",
    "Stop-VMFailover: end a test failover, cancel a failover, or cancel a prepared one.",
    "stop_vm_failover",
    failover_app,
)
_vm_command(
    "complete",
    "Complete-VMFailover: the failover's recovery point becomes the replica; the others go.",
    "complete_vm_failover",
    failover_app,
)
_vm_command("status", "Where the VM stands at this site for failover.", "get_vm_failover", failover_app)
_vm_command(
    "reverse",
    "Set-VMReplication -Reverse: after a completed failover, replicate the VM back to the old primary.",
    "set_vm_replication",
    reverse=True,
)


@app.command("history")
def history(ctx: typer.Context, *, vm: VmOption) -> None:
    """The VM's failover transitions at this site: who, when, what, from and to, which point."""
    with _client(ctx) as client:
        show_list(ctx, client.list_vm_failover_history(vm_name=vm), title=f"failover history of {vm}")
