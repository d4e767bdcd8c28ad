"""The DR site: receives deltas, commits them atomically, keeps recovery points."""

from services.replica.dr.direct import DirectWriter
from services.replica.dr.servicer import ReceiverServicer, add_receiver_to_server
from services.replica.dr.store import VmStore, check_sequence, point_id

__all__ = [
    "DirectWriter",
    "ReceiverServicer",
    "VmStore",
    "add_receiver_to_server",
    "check_sequence",
    "point_id",
]
