"""How ``overland replica`` shows replications and cycles: ages, sizes and durations as people read
them (pure), the status table that fits 100 columns, and the progress bars of a cycle (bytes, rate,
ETA) that ``replicate-now --wait`` and ``status --watch`` share.

rich is imported inside the functions that draw: formatting alone (and ``--json``) never loads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from overland.units import size
from overland.v1 import replica_pb2

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from rich.table import Table

NANOS = 1_000_000_000
# The status table is at most this wide, whatever the terminal.
STATUS_WIDTH = 100


def age(then_nanos: int, now_nanos: int) -> str:
    """How long ago ``then_nanos`` was: "never", "just now", "42 s ago", "2 min ago", "5 h ago",
    "3 d ago" (whole units, rounded down; a time in the future reads "just now")."""
    if then_nanos <= 0:
        return "never"
    seconds = max(0, (now_nanos - then_nanos) // NANOS)
    if seconds < 1:
        return "just now"
    for unit, unit_seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= unit_seconds:
            return f"{seconds // unit_seconds} {unit} ago"
    return f"{seconds} s ago"


def duration(seconds: float) -> str:
    """A duration: "0.25 s", "12 s", "3 min 5 s", "2 h 10 min"."""
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def short(enum_type: object, value: int, prefix: str) -> str:
    """An enum value without its type's prefix, lower case: ``REPLICATION_STATE_SUSPENDED`` ->
    ``suspended``."""
    name: str = enum_type.Name(value)  # type: ignore[attr-defined]
    return name.removeprefix(prefix).lower().replace("_", " ")


def state_of(replication: replica_pb2.Replication) -> str:
    return short(replica_pb2.ReplicationState, replication.state, "REPLICATION_STATE_")


def health_of(replication: replica_pb2.Replication) -> str:
    return short(replica_pb2.ReplicationHealth, replication.health, "REPLICATION_HEALTH_")


def cycle_words(cycle: replica_pb2.Cycle) -> str:
    """A cycle in a few words: "delta, 3 MiB in 0.4 s, sequence 12", "initial, running", ..."""
    kind = short(replica_pb2.CycleKind, cycle.kind, "CYCLE_KIND_") if cycle.kind else "cycle"
    state = cycle.state
    if state == replica_pb2.CYCLE_STATE_SUCCEEDED:
        seconds = max(0, cycle.end_time_unix_nanos - cycle.start_time_unix_nanos) / NANOS
        return f"{kind}, {size(cycle.total_bytes)} in {duration(seconds)}, sequence {cycle.sequence}"
    if state == replica_pb2.CYCLE_STATE_FAILED:
        return f"{kind}, failed: {cycle.error_code}: {cycle.error}"
    return f"{kind}, {short(replica_pb2.CycleState, state, 'CYCLE_STATE_')}"


def rpo_of(replication: replica_pb2.Replication) -> str:
    if not replication.statistics.last_sync_unix_nanos:
        return "-"
    return "met" if replication.statistics.rpo_met else "missed"


def last_cycle(replication: replica_pb2.Replication) -> str:
    """The last completed cycle's size and duration ("-" before the first)."""
    stats = replication.statistics
    if not stats.last_cycle_unix_nanos:
        return "-"
    return f"{size(stats.last_cycle_bytes)} / {duration(stats.last_cycle_seconds)}"


def status_table(replications: Iterable[replica_pb2.Replication], now_nanos: int) -> Table:
    """One row per VM: state, health, last sync, last cycle (size / duration), RPO and the last
    sequence; within ``STATUS_WIDTH`` columns (the reasons go below it: ``health_lines``)."""
    from rich.table import Table  # noqa: PLC0415 - see the module docstring

    table = Table(box=None, pad_edge=False)
    # The VM's name and its state fold over lines when they must; the figures never do.
    for header in ("VM", "STATE"):
        table.add_column(header, overflow="fold")
    for header in ("HEALTH", "LAST SYNC", "LAST CYCLE", "RPO", "SEQ"):
        table.add_column(header, no_wrap=True)
    for replication in replications:
        health = health_of(replication)
        color = _HEALTH_COLORS.get(health, "")
        table.add_row(
            replication.vm.name,
            state_of(replication),
            f"[{color}]{health}[/]" if color else health,
            age(replication.statistics.last_sync_unix_nanos, now_nanos),
            last_cycle(replication),
            rpo_of(replication),
            str(replication.last_sequence),
        )
    return table


_HEALTH_COLORS = {"normal": "green", "warning": "yellow", "critical": "red"}


def health_lines(replications: Iterable[replica_pb2.Replication]) -> list[str]:
    """ "VM: health: reason" for each reason a VM's health is not normal."""
    return [
        f"{replication.vm.name}: {health_of(replication)}: {reason}"
        for replication in replications
        for reason in replication.health_reasons
    ]


def points_table(points: Iterable[replica_pb2.RecoveryPoint], now_nanos: int, title: str) -> Table:
    """Recovery points, newest first: id, sequence, when taken, hourly or not."""
    from rich.table import Table  # noqa: PLC0415 - see the module docstring

    table = Table(
        "ID", "SEQUENCE", "TAKEN", "HOURLY", box=None, pad_edge=False, title=title, title_justify="left"
    )
    for point in points:
        table.add_row(
            point.id,
            str(point.sequence),
            age(point.create_time_unix_nanos, now_nanos),
            "yes" if point.hourly else "",
        )
    return table


def new_progress() -> Progress:
    """Progress bars of cycles: what, how far, bytes, rate and time left."""
    from rich.progress import (  # noqa: PLC0415 - see the module docstring
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )


def progress_text(cycle: replica_pb2.Cycle) -> str:
    kind = short(replica_pb2.CycleKind, cycle.kind, "CYCLE_KIND_") if cycle.kind else "cycle"
    state = short(replica_pb2.CycleState, cycle.state, "CYCLE_STATE_")
    return f"{cycle.vm_name} {kind} #{cycle.id} {state}"


class FileBar:
    """One bar for a file being written: ``(position, total)`` as ``write_export`` reports them."""

    def __init__(self, progress: Progress, description: str):
        self.progress = progress
        self.task = progress.add_task(description, total=None)

    def __call__(self, position: int, total: int) -> None:
        self.progress.update(self.task, completed=position, total=total)


def connection_table(test: replica_pb2.ConnectionTest) -> Table:
    """test-connection's checks: each one's result and message."""
    from rich.table import Table  # noqa: PLC0415 - see the module docstring

    table = Table(
        box=None, pad_edge=False, title=f"connection to {test.replica_server}", title_justify="left"
    )
    table.add_column("CHECK", no_wrap=True)
    table.add_column("RESULT", no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    colors = {"passed": "green", "failed": "red", "skipped": "dim"}
    for check in test.checks:
        result = short(replica_pb2.CheckResult, check.result, "CHECK_RESULT_")
        table.add_row(check.name.replace("_", " "), f"[{colors.get(result, '')}]{result}[/]", check.message)
    return table


class CycleBars:
    """One bar per VM whose cycle is followed; a bar starts over when the VM's cycle changes."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self._tasks: dict[str, tuple[int, TaskID]] = {}

    def show(self, cycle: replica_pb2.Cycle) -> None:
        known = self._tasks.get(cycle.vm_name)
        ended = cycle.state in (replica_pb2.CYCLE_STATE_SUCCEEDED, replica_pb2.CYCLE_STATE_FAILED)
        # Unknown until the cycle has planned its transfer; an ended cycle's total is known, 0 included.
        total = cycle.total_bytes if cycle.total_bytes or ended else None
        if known is None or known[0] != cycle.id:
            if known is not None:
                self.progress.remove_task(known[1])
            task = self.progress.add_task(progress_text(cycle), total=total)
            self._tasks[cycle.vm_name] = (cycle.id, task)
        else:
            task = known[1]
        self.progress.update(
            task, description=progress_text(cycle), total=total, completed=cycle.transferred_bytes
        )

    def drop_others(self, vm_names: set[str]) -> None:
        """Remove the bars of VMs not in ``vm_names`` (disabled since)."""
        for name in list(self._tasks):
            if name not in vm_names:
                self.progress.remove_task(self._tasks.pop(name)[1])
