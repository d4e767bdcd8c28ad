"""The on-disk record format of staged deltas and undo layers at the DR site.

A log is a sequence of self-checking records: a fixed header, the disk name, the data, and a 16-byte
blake3 of everything before it. A torn tail (``kill -9`` or power loss mid-write) fails the check, so
a reader stops at the last whole record and the writer truncates there and resumes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import blake3

from services.replica.vhd.device import Buffer

MAGIC = b"OVRR"
_HEADER = struct.Struct(">4sQQIBH")
TRAILER_SIZE = 16
FLAG_ZERO = 1
MAX_DISK_NAME = 255


@dataclass(frozen=True)
class RecordInfo:
    """A record's fields, and where its data sits in the log file (``data_position``)."""

    index: int
    disk: str
    offset: int
    length: int
    zero: bool
    data_position: int
    end_position: int


def encode_record(index: int, disk: str, offset: int, length: int, data: Buffer | None) -> bytes:
    """One record; ``data`` None means the range reads as zeros, and the record carries no data."""
    name = disk.encode()
    if len(name) > MAX_DISK_NAME:
        raise ValueError(f"disk name {disk!r} is longer than {MAX_DISK_NAME} bytes")
    if data is not None and len(data) != length:
        raise ValueError(f"record {index}: {len(data)} bytes of data for a length of {length}")
    body = _HEADER.pack(MAGIC, index, offset, length, FLAG_ZERO if data is None else 0, len(name)) + name
    check = blake3.blake3(body)
    if data is not None:
        check.update(data)
    return body + (data or b"") + check.digest(TRAILER_SIZE)


def locate(record: bytes, position: int) -> RecordInfo:
    """The ``RecordInfo`` of one record from ``encode_record`` written at ``position`` of a log."""
    _magic, index, offset, length, flags, name_length = _HEADER.unpack_from(record)
    data_position = position + _HEADER.size + name_length
    name = record[_HEADER.size : _HEADER.size + name_length].decode()
    zero = bool(flags & FLAG_ZERO)
    return RecordInfo(index, name, offset, length, zero, data_position, position + len(record))


def scan(log: BinaryIO, limit: int | None = None) -> Iterator[RecordInfo]:
    """The whole records from the current position, stopping silently at a torn or corrupt tail."""
    position = log.tell()
    while limit is None or position < limit:
        head = log.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        magic, index, offset, length, flags, name_length = _HEADER.unpack(head)
        if magic != MAGIC:
            return
        name = log.read(name_length)
        zero = bool(flags & FLAG_ZERO)
        data_position = position + _HEADER.size + name_length
        payload = b"" if zero else log.read(length)
        trailer = log.read(TRAILER_SIZE)
        if len(name) < name_length or len(payload) < (0 if zero else length) or len(trailer) < TRAILER_SIZE:
            return
        check = blake3.blake3(head + name)
        check.update(payload)
        if check.digest(TRAILER_SIZE) != trailer:
            return
        end = data_position + len(payload) + TRAILER_SIZE
        try:
            disk = name.decode()
        except UnicodeDecodeError:
            return
        yield RecordInfo(index, disk, offset, length, zero, data_position, end)
        position = end


def read_data(fd: int, record: RecordInfo) -> bytes:
    """The record's data (zeros for a zero record)."""
    if record.zero:
        return bytes(record.length)
    data = os.pread(fd, record.length, record.data_position)
    if len(data) != record.length:
        raise OSError(f"short read of record {record.index}")
    return data
