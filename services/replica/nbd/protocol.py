"""The newstyle fixed NBD protocol: constants, handshake negotiation and request/reply codecs.

Pure code: ``negotiate`` runs the option haggling over two callables (read exactly n bytes, write
bytes), so tests drive it with in-memory buffers and garbage; the server feeds it a socket.
Reference: the NBD protocol specification (github.com/NetworkBlockDevice/nbd, doc/proto.md).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.replica.vhd.errors import StorageError

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FLAGS = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_INFO = 6
OPT_GO = 7

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_ERR_UNSUP = 2**31 + 1
REP_ERR_INVALID = 2**31 + 3
REP_ERR_UNKNOWN = 2**31 + 6

INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

TX_HAS_FLAGS = 1 << 0
TX_READ_ONLY = 1 << 1
TX_SEND_FLUSH = 1 << 2
TX_SEND_FUA = 1 << 3
TX_SEND_TRIM = 1 << 5
TX_SEND_WRITE_ZEROES = 1 << 6
TX_CAN_MULTI_CONN = 1 << 8

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6
COMMANDS = frozenset({CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES})

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
KNOWN_CMD_FLAGS = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE

EPERM = 1
EIO = 5
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95

# qemu and the kernel client never send more than 32 MiB per request; larger is a broken client.
MAX_REQUEST = 32 * 1024 * 1024
MAX_OPTION_DATA = 64 * 1024
PREFERRED_BLOCK = 4096

_GREETING = struct.Struct(">QQH")
_OPTION = struct.Struct(">QII")
_OPTION_REPLY = struct.Struct(">QIII")
REQUEST = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")


class NbdProtocolError(StorageError, InvalidArgument):
    """The client broke the protocol; the connection is closed."""


@dataclass(frozen=True)
class ExportInfo:
    """What the handshake tells a client about an export."""

    size: int
    read_only: bool = False

    @property
    def transmission_flags(self) -> int:
        flags = TX_HAS_FLAGS | TX_SEND_FLUSH | TX_SEND_FUA | TX_CAN_MULTI_CONN
        if self.read_only:
            return flags | TX_READ_ONLY
        return flags | TX_SEND_TRIM | TX_SEND_WRITE_ZEROES


@dataclass(frozen=True)
class Request:
    """One transmission-phase request header."""

    flags: int
    command: int
    handle: int
    offset: int
    length: int


def greeting() -> bytes:
    """The server's first bytes: the newstyle magic and handshake flags."""
    return _GREETING.pack(NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)


def parse_client_flags(data: bytes) -> bool:
    """The client's flags; returns whether it asked for NO_ZEROES. Non-fixed or unknown flags fail."""
    (flags,) = struct.unpack(">I", data)
    if flags & ~CLIENT_FLAGS or not flags & FLAG_FIXED_NEWSTYLE:
        raise NbdProtocolError(f"unsupported client flags {flags:#x}")
    return bool(flags & FLAG_NO_ZEROES)


def option_reply(option: int, reply: int, data: bytes = b"") -> bytes:
    """One option reply."""
    return _OPTION_REPLY.pack(OPTION_REPLY_MAGIC, option, reply, len(data)) + data


def export_info_reply(option: int, info: ExportInfo) -> bytes:
    """The mandatory NBD_INFO_EXPORT reply."""
    return option_reply(
        option, REP_INFO, struct.pack(">HQH", INFO_EXPORT, info.size, info.transmission_flags)
    )


def block_size_reply(option: int) -> bytes:
    """NBD_INFO_BLOCK_SIZE: any byte alignment works, 4 KiB is preferred, 32 MiB is the largest request."""
    return option_reply(
        option, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, 1, PREFERRED_BLOCK, MAX_REQUEST)
    )


@dataclass(frozen=True)
class Negotiated:
    """The outcome of a successful handshake."""

    export: str
    info: ExportInfo


def negotiate(
    read: Callable[[int], bytes],
    write: Callable[[bytes], None],
    exports: Callable[[], Mapping[str, ExportInfo]],
) -> Negotiated | None:
    """Run the fixed-newstyle handshake. Returns the chosen export, or None when the client aborted.

    ``read(n)`` returns exactly n bytes or raises; protocol violations raise ``NbdProtocolError``.
    """
    write(greeting())
    no_zeroes = parse_client_flags(read(4))
    while True:
        magic, option, length = _OPTION.unpack(read(_OPTION.size))
        if magic != IHAVEOPT:
            raise NbdProtocolError(f"option magic {magic:#x} is not IHAVEOPT")
        if length > MAX_OPTION_DATA:
            raise NbdProtocolError(f"option data of {length} bytes is too long")
        data = read(length)
        known = exports()
        if option == OPT_EXPORT_NAME:
            name = _decode_name(data)
            info = known.get(name)
            if info is None:
                raise NbdProtocolError(f"unknown export {name!r}")
            write(struct.pack(">QH", info.size, info.transmission_flags) + (b"" if no_zeroes else bytes(124)))
            return Negotiated(name, info)
        if option == OPT_ABORT:
            write(option_reply(option, REP_ACK))
            return None
        if option == OPT_LIST:
            if data:
                write(option_reply(option, REP_ERR_INVALID))
                continue
            for name in sorted(known):
                encoded = name.encode()
                write(option_reply(option, REP_SERVER, struct.pack(">I", len(encoded)) + encoded))
            write(option_reply(option, REP_ACK))
        elif option in (OPT_INFO, OPT_GO):
            chosen = _info_or_go(option, data, known, write)
            if chosen is not None and option == OPT_GO:
                return chosen
        else:
            write(option_reply(option, REP_ERR_UNSUP))


def _decode_name(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        raise NbdProtocolError("export name is not UTF-8") from error


def _info_or_go(
    option: int, data: bytes, known: Mapping[str, ExportInfo], write: Callable[[bytes], None]
) -> Negotiated | None:
    if len(data) < 6:
        write(option_reply(option, REP_ERR_INVALID))
        return None
    (name_length,) = struct.unpack_from(">I", data)
    if 4 + name_length + 2 > len(data):
        write(option_reply(option, REP_ERR_INVALID))
        return None
    name = _decode_name(data[4 : 4 + name_length])
    (count,) = struct.unpack_from(">H", data, 4 + name_length)
    if 4 + name_length + 2 + 2 * count != len(data):
        write(option_reply(option, REP_ERR_INVALID))
        return None
    requested = struct.unpack_from(f">{count}H", data, 6 + name_length)
    info = known.get(name)
    if info is None:
        write(option_reply(option, REP_ERR_UNKNOWN))
        return None
    write(export_info_reply(option, info))
    if INFO_BLOCK_SIZE in requested:
        write(block_size_reply(option))
    write(option_reply(option, REP_ACK))
    return Negotiated(name, info)


def parse_request(data: bytes) -> Request:
    """A request header; a wrong magic raises ``NbdProtocolError``."""
    magic, flags, command, handle, offset, length = REQUEST.unpack(data)
    if magic != REQUEST_MAGIC:
        raise NbdProtocolError(f"request magic {magic:#x} is wrong")
    return Request(flags, command, handle, offset, length)


def check_request(request: Request, info: ExportInfo) -> int:
    """The errno a request must be refused with, or 0 when it may proceed."""
    if request.command not in COMMANDS or request.flags & ~KNOWN_CMD_FLAGS:
        return EINVAL
    if request.command in (CMD_DISC, CMD_FLUSH):
        return 0
    if request.length > MAX_REQUEST and request.command in (CMD_READ, CMD_WRITE):
        return EOVERFLOW
    if request.offset + request.length > info.size:
        return EINVAL
    if info.read_only and request.command in (CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES):
        return EPERM
    return 0


def request_payload(request: Request) -> int:
    """How many payload bytes follow the header (only writes carry data)."""
    return request.length if request.command == CMD_WRITE else 0


def simple_reply(handle: int, error: int = 0) -> bytes:
    """A simple reply header (read data follows it when ``error`` is 0)."""
    return _REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle)
