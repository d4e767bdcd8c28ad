"""The NBD export of replica disks: the newstyle protocol (pure) and a threaded server around it."""

from services.replica.nbd.protocol import (
    ExportInfo,
    NbdProtocolError,
    Negotiated,
    Request,
    check_request,
    negotiate,
    parse_request,
    simple_reply,
)
from services.replica.nbd.server import Export, NbdServer, execute

__all__ = [
    "Export",
    "ExportInfo",
    "NbdProtocolError",
    "NbdServer",
    "Negotiated",
    "Request",
    "check_request",
    "execute",
    "negotiate",
    "parse_request",
    "simple_reply",
]
