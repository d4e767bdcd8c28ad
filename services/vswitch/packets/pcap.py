"""A pure pcap (libpcap classic format) writer: bytes for the file header and each record."""

from __future__ import annotations

import struct

from services.vswitch.packets.errors import EncodeError

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_MAGIC_NANOSECONDS = 0xA1B23C4D


def pcap_file_header(linktype: int = LINKTYPE_ETHERNET, snaplen: int = 65535) -> bytes:
    """The global header; timestamps are in nanoseconds (the nanosecond magic)."""
    return _FILE_HEADER.pack(_MAGIC_NANOSECONDS, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(timestamp_ns: int, data: bytes | bytearray | memoryview, snaplen: int = 65535) -> bytes:
    """One record: its header and the first ``snaplen`` bytes of ``data``."""
    seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
    if not 0 <= seconds <= 0xFFFFFFFF:
        raise EncodeError(f"timestamp {timestamp_ns} ns is outside the 32-bit seconds of pcap")
    captured = bytes(data[:snaplen])
    return _RECORD_HEADER.pack(seconds, nanoseconds, len(captured), len(data)) + captured


def parse_pcap(content: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(linktype, [(timestamp_ns, data)]) of a file written by this module; for tests and tools."""
    _magic, _major, _minor, _zone, _sigfigs, _snaplen, linktype = _FILE_HEADER.unpack_from(content)
    offset = _FILE_HEADER.size
    records = []
    while offset + _RECORD_HEADER.size <= len(content):
        seconds, nanoseconds, captured, _original = _RECORD_HEADER.unpack_from(content, offset)
        offset += _RECORD_HEADER.size
        records.append((seconds * 1_000_000_000 + nanoseconds, content[offset : offset + captured]))
        offset += captured
    return linktype, records
