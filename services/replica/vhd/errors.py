"""The typed errors of replica storage (VHD images, block devices), mapped to gRPC status by category.

A malformed image is one error, ``VhdCorrupt``, that says what is wrong and where (a ``Fault``: the
field, its byte offset in the file, what the format expects there and what the file holds). Its
category depends on who is at fault: an image a request names (enable, import, a VM's disk) is the
caller's bad argument (INVALID_ARGUMENT); an image Overland accepted and that went bad under it (a
block read short because the file was cut while served) is ``VhdDamaged``, a failed precondition
(FAILED_PRECONDITION: retrying cannot help until the file is repaired or restored).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc

from services.common.errors import FailedPrecondition, InvalidArgument, ServiceError


class StorageError(ServiceError):
    """Base of every error raised by replica storage: disks, the tracking log, the NBD export."""


class VhdError(StorageError):
    """Base of every error about a VHD image."""


@dataclass(frozen=True)
class Fault:
    """What is wrong in an image and where: ``field`` of a structure at byte ``offset`` of the file
    holds ``found`` where the format expects ``expected``."""

    field: str
    offset: int
    expected: str
    found: str

    def describe(self) -> str:
        return f"{self.field} at byte {self.offset}: expected {self.expected}, found {self.found}"


class VhdCorrupt(VhdError, InvalidArgument):
    """The image is not a valid VHD (or not a VHD at all): truncated, a bad cookie, checksum, size,
    table or bitmap. ``fault`` says where (VHDX's reader gives only a description); ``path`` names
    the file once the shell knows it."""

    _summary = "not a valid VHD"

    def __init__(self, fault: Fault | str, path: str | os.PathLike[str] | None = None):
        self.fault = fault if isinstance(fault, Fault) else None
        self.problem = fault
        self.path = path
        prefix = f"{path}: " if path is not None else ""
        detail = fault.describe() if isinstance(fault, Fault) else fault
        summary = self._summary if isinstance(fault, Fault) else self._summary.replace("VHD", "VHDX")
        super().__init__(f"{prefix}{summary}: {detail}")

    def at(self, path: str | os.PathLike[str]) -> VhdCorrupt:
        """The same error naming the file it was found in (pure decoders do not know the path)."""
        return type(self)(self.problem, path)


class VhdDamaged(VhdCorrupt, FailedPrecondition):
    """An image that was valid when opened is not any more (the file was cut or overwritten under
    the open device): a failed precondition, not the caller's argument."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    _summary = "the VHD was valid when opened and is damaged now"


class VhdInvalid(VhdError, InvalidArgument):
    """The caller asked for something impossible: an offset past the end, a bad size or block size."""


class VhdParentError(VhdError, FailedPrecondition):
    """A differencing disk's parent cannot be found, or it is not the parent the child was made from."""


class DeviceReadOnly(StorageError, FailedPrecondition):
    """A write reached a device opened read-only."""


class DiskLocked(StorageError, FailedPrecondition):
    """Another process (a qemu, another Overland) or another open of this one holds a conflicting
    image lock on the disk file: Overland serves a disk only as its one writer."""
