"""The VM runtime's errors: part of the replica service's hierarchy (``ReplicaError``), each also a
category of services.common.errors (the gRPC code)."""

from __future__ import annotations

from services.common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.replica.errors import ReplicaError


class VmError(ReplicaError):
    """Base of the VM runtime's own errors (mixed into every class below)."""


class InvalidVmSpec(VmError, InvalidArgument):
    """A VM's settings cannot be turned into a qemu command line or a guest kernel command line."""


class VmNotRunning(VmError, FailedPrecondition):
    """The operation needs a running VM (a QMP command, a graceful stop) and its qemu has exited."""


class VmAlreadyRunning(VmError, FailedPrecondition):
    """``start`` was called on a VM that is not off (the message names its state)."""


class VmNotOff(VmError, FailedPrecondition):
    """The operation (delete) needs the VM off, and it is not (the message names its state)."""


class VmLocked(VmError, FailedPrecondition):
    """The VM may not start here: a replica, or a primary prepared for failover (the message says)."""


class VmInUse(VmError, FailedPrecondition):
    """The VM (or its disk) is held by something else at the site, e.g. its replication."""


class VmNotFound(VmError, NotFound):
    """No VM of that name is defined at this site."""


class VmExists(VmError, AlreadyExists):
    """A VM of that name is already defined at this site."""


class GuestImageMissing(VmError, FailedPrecondition):
    """The site has no guest image to boot (``make guest`` builds one; ``--guest-image`` names it)."""


class QemuFailed(VmError):
    """qemu could not be started, exited while starting, or a QMP exchange broke (an internal error)."""


class QmpCommandFailed(VmError, FailedPrecondition):
    """qemu answered a QMP command with an error (its class and description are in the message)."""


class VmTimeout(VmError, DeadlineExceeded):
    """The guest did not do something in time: shut down after ACPI powerdown, print a console line."""


class GuestImageError(VmError):
    """The guest image or a VM disk could not be built or read: a tool failed or an input is missing."""
