"""Errors of the change-tracking log."""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidArgument
from services.replica.vhd.errors import StorageError


class TrackingError(StorageError):
    """Base of every change-tracking error."""


class TrackingInvalid(TrackingError, InvalidArgument):
    """A bad parameter: a block size that is not a power of two, a range outside the disk."""


class CutPending(TrackingError, FailedPrecondition):
    """A cut was asked for while the previous one has not been released yet."""
