"""``overland replica``: Hyper-V Replica style commands against the primary site's replica service.

The replica engineer extends this module (issue 4); each command is a thin call of ``ReplicaClient``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from overland._transport import RpcSpec, Unary
from overland.cli.common import service_group, settings, show, show_list
from overland.client import ReplicaClient, ReplicaReceiverClient
from overland.records import enum_value
from overland.v1 import replica_pb2

if TYPE_CHECKING:
    from rich.progress import Progress

app = service_group(ReplicaClient, "replica")

INITIAL_METHODS = click.Choice(["network", "external-media", "existing-copy"])


def _client(ctx: click.Context) -> ReplicaClient:
    return settings(ctx).client(ReplicaClient)


def _disk(spec: str) -> replica_pb2.VmDisk:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise click.BadParameter(f"--disk takes NAME=PATH, got {spec!r}")
    return replica_pb2.VmDisk(name=name, path=path)


@app.command("enable")
@click.option("--vm", required=True, help="The VM's name.")
@click.option("--disk", multiple=True, required=True, help="NAME=PATH of a VHD; repeat for several.")
@click.option("--replica-server", required=True, help="The DR site's replica endpoint, host:port.")
@click.option("--frequency", type=int, default=300, help="Seconds between cycles: 30, 300 or 900.")
@click.option("--recovery-points", type=int, default=0, help="Additional hourly recovery points, 0..24.")
@click.option("--compression/--no-compression", default=True, help="Compress deltas (zstd).")
@click.option("--bandwidth-limit", type=int, default=0, help="Bytes per second; 0 is unlimited.")
@click.option("--initial-method", type=INITIAL_METHODS, default="network", help="How the first copy travels.")
@click.option("--export-path", default="", help="With external-media: where to export.")
@click.pass_context
def enable(
    ctx: click.Context,
    *,
    vm: str,
    disk: tuple[str, ...],
    replica_server: str,
    frequency: int,
    recovery_points: int,
    compression: bool,
    bandwidth_limit: int,
    initial_method: str,
    export_path: str,
) -> None:
    """Enable-VMReplication."""
    settings_message = replica_pb2.ReplicationSettings(
        frequency_seconds=frequency,
        additional_recovery_points=recovery_points,
        compression=compression,
        bandwidth_limit_bytes_per_second=bandwidth_limit,
        replica_server=replica_server,
        initial_method=enum_value(
            initial_method, replica_pb2.InitialReplicationMethod, "INITIAL_REPLICATION_METHOD_"
        ),
        export_path=export_path,
    )
    machine = replica_pb2.VirtualMachine(name=vm, disks=[_disk(d) for d in disk])
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
@click.argument("vm", required=False)
@click.option("--watch", is_flag=True, help="Refresh with progress bars until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, help="Seconds between refreshes with --watch.")
@click.option(
    "--count", type=int, default=0, help="With --watch: stop after this many refreshes; 0 is endless."
)
@click.pass_context
def status(ctx: click.Context, *, vm: str | None, watch: bool, interval: float, count: int) -> None:
    """Measure-VMReplication: state, health and statistics per VM (or of VM alone)."""
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
    @click.pass_context
    def command(ctx: click.Context, vm: str) -> None:
        with _client(ctx) as client:
            show(ctx, getattr(client, method_name)(vm_name=vm))

    app.add_command(click.Command(name, callback=command, params=[click.Argument(["vm"])], help=doc))


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
@click.argument("path")
@click.option("--primary", required=True, help="The primary it came from (picks the storage location).")
@click.pass_context
def import_initial(ctx: click.Context, path: str, *, primary: str) -> None:
    """Import-VMInitialReplication: at the DR site (--endpoint of the DR replica service), import an
    initial replica exported to external media at the primary (PATH: the export file on the DR host)."""
    with settings(ctx).client(_DrSiteClient) as client:
        show(ctx, client.import_initial_replica(path=path, primary=primary))


@app.command("recovery-points")
@click.argument("vm")
@click.pass_context
def recovery_points(ctx: click.Context, vm: str) -> None:
    """Get-VMSnapshot -SnapshotType Replica: the recovery points kept for a VM."""
    with _client(ctx) as client:
        show_list(ctx, client.list_recovery_points(vm_name=vm), title=f"recovery points of {vm}")
