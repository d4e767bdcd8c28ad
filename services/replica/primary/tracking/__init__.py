"""Change tracking for replica disks: the persistent HRL-like log and the tracked, snapshot-able device."""

from services.replica.locks import WriteGate
from services.replica.primary.tracking.errors import CutPending, TrackingError, TrackingInvalid
from services.replica.primary.tracking.extents import BlockSet, LogHeader, block_span, log_limit
from services.replica.primary.tracking.log import DEFAULT_TRACK_BLOCK, ChangeLog, Cut, cut_path
from services.replica.primary.tracking.tracked import Snapshot, TrackedDevice, snapshot_group

__all__ = [
    "DEFAULT_TRACK_BLOCK",
    "BlockSet",
    "ChangeLog",
    "Cut",
    "CutPending",
    "LogHeader",
    "Snapshot",
    "TrackedDevice",
    "TrackingError",
    "TrackingInvalid",
    "WriteGate",
    "block_span",
    "cut_path",
    "log_limit",
    "snapshot_group",
]
