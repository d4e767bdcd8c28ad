"""Errors of the datapath shell (ports, sockets, configuration)."""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound


class DatapathError(FailedPrecondition):
    """The datapath cannot do what was asked in its current state (not started, socket failed)."""


class PortError(DatapathError):
    """A VM port cannot be opened, moved or found."""


class TableChangingError(DatapathError):
    """A decision read a routing table that another thread was changing (an update made without
    ``table_lock``); the frame is dropped as ``table_changing``, never acted on."""


class PortNotFound(NotFound):
    """No port of that name is attached."""


class DatapathConfigError(InvalidArgument):
    """The datapath configuration is invalid."""


class ExtensionError(InvalidArgument):
    """An extension configuration is invalid (unknown kind, bad settings)."""
