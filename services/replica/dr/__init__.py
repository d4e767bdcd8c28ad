"""The DR site: receives deltas, commits them atomically, keeps recovery points."""

from services.replica.dr.direct import DirectWriter
from services.replica.dr.points import point_id
from services.replica.dr.servicer import ReceiverServicer, add_receiver_to_server
from services.replica.dr.staging import Staging, check_sequence
from services.replica.dr.store import VmStore

__all__ = [
    "DirectWriter",
    "ReceiverServicer",
    "Staging",
    "VmStore",
    "add_receiver_to_server",
    "check_sequence",
    "point_id",
]
