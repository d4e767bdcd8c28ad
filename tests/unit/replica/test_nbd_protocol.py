"""The pure NBD protocol: handshake negotiation over in-memory streams, request checks, and fuzzing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.replica.nbd import (
    ExportInfo,
    NbdProtocolError,
    Request,
    check_request,
    negotiate,
    parse_request,
)
from services.replica.nbd.protocol import (
    CMD_DISC,
    CMD_FLUSH,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    EINVAL,
    EOVERFLOW,
    EPERM,
    IHAVEOPT,
    INFO_BLOCK_SIZE,
    MAX_REQUEST,
    NBDMAGIC,
    OPT_ABORT,
    OPT_EXPORT_NAME,
    OPT_GO,
    OPT_INFO,
    OPT_LIST,
    OPTION_REPLY_MAGIC,
    REP_ACK,
    REP_ERR_INVALID,
    REP_ERR_UNKNOWN,
    REP_ERR_UNSUP,
    REP_INFO,
    REP_SERVER,
    REQUEST_MAGIC,
    TX_READ_ONLY,
    TX_SEND_TRIM,
    simple_reply,
)

EXPORTS = {"disk0": ExportInfo(1 << 20), "ro": ExportInfo(4096, read_only=True)}


class EndOfInput(EOFError):
    pass


class Stream:
    """A scripted client: ``read`` serves its bytes, ``write`` collects the server's."""

    def __init__(self, data: bytes):
        self.data = data
        self.position = 0
        self.sent = bytearray()

    def read(self, n: int) -> bytes:
        if self.position + n > len(self.data):
            raise EndOfInput
        chunk = self.data[self.position : self.position + n]
        self.position += n
        return chunk

    def write(self, data: bytes) -> None:
        self.sent += data


def option(code: int, data: bytes = b"") -> bytes:
    return struct.pack(">QII", IHAVEOPT, code, len(data)) + data


def go_data(name: str, infos: tuple[int, ...] = ()) -> bytes:
    encoded = name.encode()
    return struct.pack(">I", len(encoded)) + encoded + struct.pack(f">H{len(infos)}H", len(infos), *infos)


def run(client: bytes) -> tuple[object, bytes]:
    stream = Stream(client)
    result = negotiate(stream.read, stream.write, lambda: EXPORTS)
    return result, bytes(stream.sent)


def replies(sent: bytes) -> list[tuple[int, int, bytes]]:
    """Parse option replies after the 18-byte greeting."""
    out = []
    position = 18
    while position < len(sent):
        magic, opt, kind, length = struct.unpack_from(">QIII", sent, position)
        assert magic == OPTION_REPLY_MAGIC
        out.append((opt, kind, sent[position + 20 : position + 20 + length]))
        position += 20 + length
    return out


FLAGS_NO_ZEROES = struct.pack(">I", 3)


def test_greeting_is_fixed_newstyle() -> None:
    with pytest.raises(EndOfInput):
        run(b"")
    stream = Stream(b"")
    with pytest.raises(EndOfInput):
        negotiate(stream.read, stream.write, lambda: EXPORTS)
    magic, ihaveopt, flags = struct.unpack(">QQH", bytes(stream.sent))
    assert (magic, ihaveopt, flags) == (NBDMAGIC, IHAVEOPT, 3)


def test_export_name_with_and_without_zeroes() -> None:
    result, sent = run(FLAGS_NO_ZEROES + option(OPT_EXPORT_NAME, b"disk0"))
    assert result is not None
    size, flags = struct.unpack(">QH", sent[18:])
    assert size == 1 << 20
    assert flags & TX_SEND_TRIM
    result, sent = run(struct.pack(">I", 1) + option(OPT_EXPORT_NAME, b"disk0"))
    assert len(sent) == 18 + 10 + 124


def test_export_name_unknown_closes() -> None:
    with pytest.raises(NbdProtocolError, match="unknown export"):
        run(FLAGS_NO_ZEROES + option(OPT_EXPORT_NAME, b"nope"))


def test_list_then_go_with_block_size() -> None:
    result, sent = run(FLAGS_NO_ZEROES + option(OPT_LIST) + option(OPT_GO, go_data("ro", (INFO_BLOCK_SIZE,))))
    assert result is not None
    got = replies(sent)
    assert [(o, k) for o, k, _ in got] == [
        (OPT_LIST, REP_SERVER),
        (OPT_LIST, REP_SERVER),
        (OPT_LIST, REP_ACK),
        (OPT_GO, REP_INFO),
        (OPT_GO, REP_INFO),
        (OPT_GO, REP_ACK),
    ]
    assert got[0][2] == struct.pack(">I", 5) + b"disk0"
    _type, size, flags = struct.unpack(">HQH", got[3][2])
    assert size == 4096
    assert flags & TX_READ_ONLY
    assert not flags & TX_SEND_TRIM


def test_info_unknown_invalid_and_unsupported_options_keep_the_session() -> None:
    client = (
        FLAGS_NO_ZEROES
        + option(OPT_INFO, go_data("missing"))
        + option(OPT_INFO, b"\x00\x00")
        + option(OPT_LIST, b"x")
        + option(8)
        + option(OPT_INFO, go_data("disk0"))
        + option(OPT_ABORT)
    )
    result, sent = run(client)
    assert result is None
    kinds = [k for _o, k, _d in replies(sent)]
    assert kinds == [
        REP_ERR_UNKNOWN,
        REP_ERR_INVALID,
        REP_ERR_INVALID,
        REP_ERR_UNSUP,
        REP_INFO,
        REP_ACK,
        REP_ACK,
    ]


def test_bad_client_flags_and_magic() -> None:
    with pytest.raises(NbdProtocolError):
        run(struct.pack(">I", 0))
    with pytest.raises(NbdProtocolError):
        run(struct.pack(">I", 0x80000001))
    with pytest.raises(NbdProtocolError, match="IHAVEOPT"):
        run(FLAGS_NO_ZEROES + struct.pack(">QII", 1, 1, 0))
    with pytest.raises(NbdProtocolError, match="too long"):
        run(FLAGS_NO_ZEROES + struct.pack(">QII", IHAVEOPT, OPT_GO, 2**31))


@given(st.binary(max_size=300))
def test_fuzzed_handshake_only_raises_protocol_errors_or_runs_out(garbage: bytes) -> None:
    for prefix in (b"", FLAGS_NO_ZEROES, FLAGS_NO_ZEROES + struct.pack(">Q", IHAVEOPT)):
        with contextlib.suppress(NbdProtocolError, EndOfInput):
            run(prefix + garbage)


@given(
    st.lists(
        st.tuples(st.integers(0, 12).filter(lambda c: c != OPT_EXPORT_NAME), st.binary(max_size=40)),
        max_size=6,
    )
)
def test_fuzzed_options_get_well_formed_replies(options: list[tuple[int, bytes]]) -> None:
    stream = Stream(FLAGS_NO_ZEROES + b"".join(option(code, data) for code, data in options))
    with contextlib.suppress(NbdProtocolError, EndOfInput):
        negotiate(stream.read, stream.write, lambda: EXPORTS)
    answered = replies(bytes(stream.sent))
    finals = [o for o, kind, _d in answered if kind == REP_ACK or kind >= 2**31]
    # Each option read is answered, in order, by informational replies and then one final reply.
    assert finals == [code for code, _data in options][: len(finals)]
    if answered:
        assert answered[-1][1] == REP_ACK or answered[-1][1] >= 2**31


def request(command: int, offset: int = 0, length: int = 0, flags: int = 0) -> Request:
    return parse_request(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, command, 42, offset, length))


def test_request_checks() -> None:
    rw, ro = EXPORTS["disk0"], EXPORTS["ro"]
    assert check_request(request(CMD_READ, 0, 4096), rw) == 0
    assert check_request(request(CMD_READ, (1 << 20) - 1, 2), rw) == EINVAL
    assert check_request(request(CMD_READ, 0, MAX_REQUEST + 1), rw) == EOVERFLOW
    assert check_request(request(CMD_WRITE, 0, 1), ro) == EPERM
    assert check_request(request(CMD_TRIM, 0, 1), ro) == EPERM
    assert check_request(request(CMD_FLUSH), ro) == 0
    assert check_request(request(CMD_DISC), rw) == 0
    assert check_request(request(99), rw) == EINVAL
    assert check_request(request(CMD_READ, 0, 1, flags=1 << 7), rw) == EINVAL
    with pytest.raises(NbdProtocolError):
        parse_request(bytes(28))


def test_simple_reply_layout() -> None:
    assert simple_reply(7, 5) == struct.pack(">IIQ", 0x67446698, 5, 7)
