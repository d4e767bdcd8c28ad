"""The typed errors of replica storage (VHD images, block devices), mapped to gRPC status by category."""

from __future__ import annotations

from services.common.errors import DataLoss, FailedPrecondition, InvalidArgument, ServiceError


class StorageError(ServiceError):
    """Base of every error raised by replica storage: disks, the tracking log, the NBD export."""


class VhdError(StorageError):
    """Base of every error about a VHD image."""


class VhdCorrupt(VhdError, DataLoss):
    """The image on disk is malformed: bad cookie, checksum, geometry, table or truncated file."""


class VhdInvalid(VhdError, InvalidArgument):
    """The caller asked for something impossible: an offset past the end, a bad size or block size."""


class VhdParentError(VhdError, FailedPrecondition):
    """A differencing disk's parent cannot be found, or it is not the parent the child was made from."""


class DeviceReadOnly(StorageError, FailedPrecondition):
    """A write reached a device opened read-only."""
