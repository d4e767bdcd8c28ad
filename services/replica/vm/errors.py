"""The VM runtime's errors; each subclasses a category of services.common.errors (the gRPC code)."""

from __future__ import annotations

from services.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, ServiceError


class VmError(ServiceError):
    """Base of the VM runtime's own errors (mixed into every class below)."""


class InvalidVmSpec(VmError, InvalidArgument):
    """A VM's settings cannot be turned into a qemu command line or a guest kernel command line."""


class VmNotRunning(VmError, FailedPrecondition):
    """The operation needs a running VM (a QMP command, a graceful stop) and its qemu has exited."""


class VmAlreadyRunning(VmError, FailedPrecondition):
    """``start`` was called on a VM whose qemu is still running."""


class QemuFailed(VmError):
    """qemu could not be started, exited while starting, or a QMP exchange broke (an internal error)."""


class QmpCommandFailed(VmError, FailedPrecondition):
    """qemu answered a QMP command with an error (its class and description are in the message)."""


class VmTimeout(VmError, DeadlineExceeded):
    """The guest did not do something in time: shut down after ACPI powerdown, print a console line."""


class GuestImageError(VmError):
    """The guest image or a VM disk could not be built or read: a tool failed or an input is missing."""
