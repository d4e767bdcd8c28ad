"""Pure change-tracking logic: block sets, and the on-disk log's header and record codecs.

The log file (in the manner of Hyper-V's HRL) is two 512-byte header slots (the one with the higher
valid sequence wins, so a torn header write falls back to the previous one) followed, from byte 4096,
by append-only records. Each record lists block runs made dirty and ends in a CRC-32, so a torn tail is
recognised and ignored on replay.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from services.replica.primary.tracking.errors import TrackingInvalid

HEADER_MAGIC = b"OVLHRL\x00\x01"
HEADER_SLOT = 512
RECORDS_START = 4096
RECORD_MAGIC = b"HRLR"
_HEADER = struct.Struct(">8sIQQIQBB")
_RECORD_HEAD = struct.Struct(">4sQI")
_RUN = struct.Struct(">QI")
_CRC = struct.Struct(">I")
# Runs per record are bounded so a corrupt count cannot make replay allocate absurdly.
MAX_RUNS = 65536
LOG_VERSION = 1

Run = tuple[int, int]


def block_span(offset: int, length: int, block_size: int) -> Run:
    """The run ``(first_block, count)`` of blocks touched by bytes ``[offset, offset + length)``."""
    if length <= 0:
        return (offset // block_size, 0)
    first = offset // block_size
    return (first, (offset + length - 1) // block_size - first + 1)


class BlockSet:
    """A set of block indexes over a disk of ``blocks`` blocks, as a bitmap."""

    def __init__(self, blocks: int):
        self.blocks = blocks
        self._bits = bytearray(-(-blocks // 8))
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, block: object) -> bool:
        return isinstance(block, int) and 0 <= block < self.blocks and self._test(block)

    def _test(self, block: int) -> bool:
        return bool(self._bits[block >> 3] & (1 << (block & 7)))

    def add_run(self, first: int, count: int) -> list[Run]:
        """Add blocks ``[first, first + count)``; return the runs that were not in the set before."""
        if first < 0 or count < 0 or first + count > self.blocks:
            raise TrackingInvalid(f"blocks [{first}, {first + count}) outside a disk of {self.blocks}")
        added: list[Run] = []
        for block in range(first, first + count):
            if self._test(block):
                continue
            self._bits[block >> 3] |= 1 << (block & 7)
            self._count += 1
            if added and added[-1][0] + added[-1][1] == block:
                added[-1] = (added[-1][0], added[-1][1] + 1)
            else:
                added.append((block, 1))
        return added

    def add_runs(self, runs: Iterable[Run]) -> list[Run]:
        """Add every run; return the newly added runs."""
        added: list[Run] = []
        for first, count in runs:
            added.extend(self.add_run(first, count))
        return added

    def fill(self) -> None:
        """Add every block of the disk."""
        self.add_run(0, self.blocks)

    def runs(self) -> list[Run]:
        """The set as sorted maximal runs ``(first_block, count)``."""
        runs: list[Run] = []
        for index, byte in enumerate(self._bits):
            if not byte:
                continue
            for bit in range(8):
                if byte & (1 << bit):
                    block = index * 8 + bit
                    if runs and runs[-1][0] + runs[-1][1] == block:
                        runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                    else:
                        runs.append((block, 1))
        return runs


@dataclass(frozen=True)
class LogHeader:
    """A header slot: which generation the log holds and the flags that force a resync."""

    sequence: int
    generation: int
    block_size: int
    disk_size: int
    clean: bool
    resync_required: bool
    version: int = LOG_VERSION

    def encode(self) -> bytes:
        body = _HEADER.pack(
            HEADER_MAGIC,
            self.version,
            self.sequence,
            self.generation,
            self.block_size,
            self.disk_size,
            int(self.clean),
            int(self.resync_required),
        )
        return (body + _CRC.pack(zlib.crc32(body))).ljust(HEADER_SLOT, b"\0")


def decode_header(slot: bytes) -> LogHeader | None:
    """A header slot, or None when it is torn, corrupt or not a log header at all."""
    size = _HEADER.size
    if len(slot) < size + 4:
        return None
    body, (crc,) = slot[:size], _CRC.unpack_from(slot, size)
    if zlib.crc32(body) != crc:
        return None
    magic, version, sequence, generation, block_size, disk_size, clean, resync = _HEADER.unpack(body)
    if magic != HEADER_MAGIC or version != LOG_VERSION:
        return None
    return LogHeader(sequence, generation, block_size, disk_size, bool(clean), bool(resync), version)


def newest_header(slots: Iterable[bytes]) -> LogHeader | None:
    """The valid header with the highest sequence among the slots, if any."""
    valid = [h for h in (decode_header(s) for s in slots) if h is not None]
    return max(valid, key=lambda h: h.sequence, default=None)


def encode_record(sequence: int, runs: list[Run]) -> bytes:
    """One log record: the runs of blocks made dirty, checksummed."""
    body = _RECORD_HEAD.pack(RECORD_MAGIC, sequence, len(runs)) + b"".join(
        _RUN.pack(first, count) for first, count in runs
    )
    return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class Replay:
    """What replaying a log's records found: the runs, the next sequence and where valid data ends."""

    runs: list[Run]
    next_sequence: int
    valid_end: int
    torn: bool


def replay(data: bytes, start: int = RECORDS_START, blocks: int | None = None) -> Replay:
    """Read records from ``data[start:]`` until the end or the first torn/corrupt record.

    A record is accepted only if its checksum matches, its sequence follows the previous one and (when
    ``blocks`` is given) its runs lie within the disk.
    """
    runs: list[Run] = []
    position = start
    expected: int | None = None
    while position < len(data):
        head_end = position + _RECORD_HEAD.size
        if head_end > len(data):
            return Replay(runs, expected or 0, position, True)
        magic, sequence, count = _RECORD_HEAD.unpack_from(data, position)
        end = head_end + count * _RUN.size + _CRC.size
        if magic != RECORD_MAGIC or count > MAX_RUNS or end > len(data):
            return Replay(runs, expected or 0, position, True)
        (crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(data[position : end - _CRC.size]) != crc or (
            expected is not None and sequence != expected
        ):
            return Replay(runs, expected or 0, position, True)
        record_runs = [_RUN.unpack_from(data, head_end + i * _RUN.size) for i in range(count)]
        if blocks is not None and any(f + c > blocks for f, c in record_runs):
            return Replay(runs, expected or 0, position, True)
        runs.extend(record_runs)
        expected = sequence + 1
        position = end
    return Replay(runs, expected or 0, position, False)


def log_limit(disk_size: int) -> int:
    """Log size beyond which the disk is marked resync required (Hyper-V: half the disk)."""
    return disk_size // 2


def check_block_size(block_size: int) -> None:
    """Tracking blocks are powers of two from 512 bytes to 64 MiB."""
    if not 512 <= block_size <= 64 * 1024 * 1024 or block_size & (block_size - 1):
        raise TrackingInvalid(f"tracking block size {block_size} must be a power of two in [512, 64 MiB]")
