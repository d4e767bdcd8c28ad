"""The DR site: receives deltas, commits them atomically, keeps recovery points."""

from services.replica.receiver.servicer import ReceiverServicer
from services.replica.receiver.store import VmStore, check_sequence, point_id

__all__ = ["ReceiverServicer", "VmStore", "check_sequence", "point_id"]
