"""``overland replica``: Hyper-V Replica style commands against a site's replica service.

The replica engineer extends this module (issue 4); each command is a thin call of ``ReplicaClient``.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, Annotated

import typer

from overland._transport import RpcSpec, Unary
from overland.cli.common import (
    DISK_FORMAT_HELP,
    DiskFormat,
    disk_spec,
    service_group,
    settings,
    show,
    show_list,
)
from overland.cli.params import INT64_MAX, UINT32_MAX, UINT64_MAX
from overland.cli.params import interval as interval_seconds
from overland.client import ReplicaClient, ReplicaReceiverClient
from overland.records import enum_value
from overland.v1 import replica_pb2

if TYPE_CHECKING:
    from rich.progress import Progress

app = service_group(ReplicaClient, "replica")


class InitialMethod(enum.StrEnum):
    network = "network"
    external_media = "external-media"
    existing_copy = "existing-copy"


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
    replica_server: Annotated[str, typer.Option(help="The DR site's replica endpoint, host:port.")],
    frequency: Annotated[
        int, typer.Option(help="Seconds between cycles: 30, 300 or 900.", min=0, max=UINT32_MAX)
    ] = 300,
    recovery_points: Annotated[
        int, typer.Option(help="Additional hourly recovery points, 0..24.", min=0, max=UINT32_MAX)
    ] = 0,
    compression: Annotated[bool, typer.Option(help="Compress deltas (zstd).")] = True,
    bandwidth_limit: Annotated[
        int, typer.Option(help="Bytes per second; 0 is unlimited.", min=0, max=UINT64_MAX)
    ] = 0,
    initial_method: Annotated[InitialMethod, typer.Option(help="How the first copy travels.")] = (
        InitialMethod.network
    ),
    export_path: Annotated[str, typer.Option(help="With external-media: where to export.")] = "",
) -> None:
    """Enable-VMReplication."""
    settings_message = replica_pb2.ReplicationSettings(
        frequency_seconds=frequency,
        additional_recovery_points=recovery_points,
        compression=compression,
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


def _progress_rows(progress: Progress, replications: list[replica_pb2.Replication]) -> None:
    for task_id in list(progress.task_ids):
        progress.remove_task(task_id)
    for replication in replications:
        state = replica_pb2.ReplicationState.Name(replication.state).removeprefix("REPLICATION_STATE_")
        # Progress counts in permille: rich wants integers, the service reports 0..1.
        progress.add_task(
            f"{replication.vm.name} {state.lower()}",
            total=1000,
            completed=round(replication.statistics.progress * 1000),
        )


@app.command("status")
def status(
    ctx: typer.Context,
    *,
    vm: Annotated[str | None, typer.Argument(help="One VM; all when omitted.")] = None,
    watch: Annotated[bool, typer.Option(help="Refresh with progress bars until Ctrl-C.")] = False,
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
    """Measure-VMReplication: state, health and statistics per VM."""
    with _client(ctx) as client:

        def fetch() -> list[replica_pb2.Replication]:
            return [client.get_replication(vm_name=vm)] if vm else list(client.list_replications())

        if not watch:
            show_list(ctx, fetch(), title="replication")
            return
        # rich's live display, only for --watch (see overland.cli.common on importing rich late).
        from rich.live import Live  # noqa: PLC0415
        from rich.progress import BarColumn, Progress, TextColumn  # noqa: PLC0415

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%")
        )
        refreshes = 0
        with Live(progress, console=settings(ctx).out, refresh_per_second=4):
            while not count or refreshes < count:
                _progress_rows(progress, fetch())
                refreshes += 1
                time.sleep(interval)


def _vm_command(name: str, doc: str, method_name: str) -> None:
    def command(ctx: typer.Context, vm: Annotated[str, typer.Argument(help="The VM's name.")]) -> None:
        with _client(ctx) as client:
            show(ctx, getattr(client, method_name)(vm_name=vm))

    command.__doc__ = doc
    app.command(name)(command)


_vm_command("pause", "Suspend-VMReplication.", "pause_replication")
_vm_command("resume", "Resume-VMReplication.", "resume_replication")
_vm_command(
    "resync", "Resume-VMReplication -Resynchronize: compare and resend what differs.", "resync_replication"
)
_vm_command(
    "replicate-now", "Run one replication cycle now instead of waiting for the interval.", "replicate_now"
)
_vm_command(
    "disable", "Remove-VMReplication: stop replicating the VM (the DR copy stays).", "disable_replication"
)


class _DrSiteClient(ReplicaReceiverClient):
    """The DR site's receiver, with the import an administrator runs there."""

    import_initial_replica = Unary(
        RpcSpec("ImportInitialReplica"), replica_pb2.ImportInitialReplicaRequest, replica_pb2.DeltaAck
    )


@app.command("import")
def import_initial(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="The export file, as a path on the DR host.")],
    *,
    primary: Annotated[str, typer.Option(help="The primary it came from (picks the storage location).")],
) -> None:
    """Import-VMInitialReplication: at the DR site (--endpoint of the DR replica service), import an
    initial replica exported to external media at the primary."""
    with settings(ctx).client(_DrSiteClient) as client:
        show(ctx, client.import_initial_replica(path=path, primary=primary))


@app.command("recovery-points")
def recovery_points(ctx: typer.Context, vm: Annotated[str, typer.Argument(help="The VM's name.")]) -> None:
    """Get-VMSnapshot -SnapshotType Replica: the recovery points kept for a VM."""
    with _client(ctx) as client:
        show_list(ctx, client.list_recovery_points(vm_name=vm), title=f"recovery points of {vm}")
