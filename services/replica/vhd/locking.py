"""qemu-compatible image locking: the byte-range locks qemu's ``file-posix`` driver takes on an image.

qemu describes what an open image does with four permissions (consistent read, write, write
unchanged, resize) and which of them it lets others have. It publishes that as shared OFD locks on
single bytes of the image file: byte 100 + i while it holds permission i, byte 200 + i while it does
not share permission i. Before relying on an open it tests the bytes the others hold: nobody may
hold "does not share i" (200 + i) for a permission i it wants, nor "holds i" (100 + i) for a
permission i it does not share. Overland takes and tests the same bytes, so qemu and Overland see
each other: a disk Overland serves is refused to ``qemu-img``/``qemu-io`` without ``-U`` and to a
second qemu, and Overland refuses a disk a qemu writes. OFD locks belong to the open file, not the
process, so a second open in the same process is refused too; closing the file releases them.

``plan`` is the pure decision (which bytes to lock, which to test); ``hold`` is the fcntl shell.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from enum import IntFlag

from services.replica.vhd.errors import DiskLocked, StorageError

PERM_BASE = 100
SHARED_BASE = 200


class Perm(IntFlag):
    """qemu's block permissions (``BLK_PERM_*``), bit i locking byte base + i."""

    CONSISTENT_READ = 0x01
    WRITE = 0x02
    WRITE_UNCHANGED = 0x04
    RESIZE = 0x08


ALL_PERMS = Perm.CONSISTENT_READ | Perm.WRITE | Perm.WRITE_UNCHANGED | Perm.RESIZE
PERM_NAMES = {
    Perm.CONSISTENT_READ: "consistent read",
    Perm.WRITE: "write",
    Perm.WRITE_UNCHANGED: "write unchanged",
    Perm.RESIZE: "resize",
}


@dataclass(frozen=True)
class LockMode:
    """The permissions an open takes and those it lets others take."""

    perm: Perm
    shared: Perm


# What qemu holds on an image it opens read-write (a VM's disk, qemu-io): it reads, writes and may
# grow the file, and lets nobody else write or resize it. Overland's writable opens take the same.
WRITER = LockMode(
    Perm.CONSISTENT_READ | Perm.WRITE | Perm.RESIZE, Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED
)
# What qemu holds on a read-only image whose content must not change under it (a backing file,
# ``qemu-img info`` without -U): the parents of a writable differencing disk.
BACKING = LockMode(Perm.CONSISTENT_READ, Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED)
# qemu's force-share (``-U``): reads and lets everyone do anything. Overland's read-only opens (the
# DR site's hashes and recovery points, tests reading a served disk) never block a writer.
READER = LockMode(Perm.CONSISTENT_READ, ALL_PERMS)


@dataclass(frozen=True)
class Probe:
    """A byte another holder must not have locked, and what it means when it has."""

    byte: int
    perm: Perm
    # True: the other holder does not share a permission we want. False: it holds one we do not share.
    unshared_by_other: bool

    def explain(self) -> str:
        name = PERM_NAMES[self.perm]
        where = f"qemu image lock byte {self.byte}"
        if self.unshared_by_other:
            return f'another open of it does not share "{name}" ({where})'
        return f'another open of it holds "{name}", which this one does not share ({where})'


def _bits(perms: Perm) -> list[tuple[int, Perm]]:
    return [(i, Perm(1 << i)) for i in range(len(PERM_NAMES)) if perms & (1 << i)]


def plan(mode: LockMode) -> tuple[list[int], list[Probe]]:
    """The bytes an open in ``mode`` locks (shared), and the bytes it tests for others' locks."""
    unshared = ALL_PERMS & ~mode.shared
    locked = [PERM_BASE + i for i, _ in _bits(mode.perm)] + [SHARED_BASE + i for i, _ in _bits(unshared)]
    probes = [Probe(SHARED_BASE + i, p, True) for i, p in _bits(mode.perm)]
    probes += [Probe(PERM_BASE + i, p, False) for i, p in _bits(unshared)]
    return locked, probes


def conflicts(mode: LockMode, held_by_others: set[int]) -> list[Probe]:
    """The probes of ``mode`` that bytes locked by other opens fail (pure: ``hold`` asks the kernel)."""
    return [probe for probe in plan(mode)[1] if probe.byte in held_by_others]


# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid.
_FLOCK = struct.Struct("@hhqqi4x")


def _fcntl_lock(fd: int, command: int, kind: int, byte: int) -> int:
    """One fcntl OFD lock call on ``byte``; returns the l_type the kernel reports."""
    request = _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0)
    reply = fcntl.fcntl(fd, command, request)
    return int(_FLOCK.unpack(reply)[0])


def _held_by_others(fd: int, byte: int) -> bool:
    # F_OFD_GETLK with a write lock reports any lock another open file holds on the byte (qemu's test).
    return _fcntl_lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, byte) != fcntl.F_UNLCK


def hold(fd: int, mode: LockMode, path: str | os.PathLike[str]) -> None:
    """Take ``mode``'s locks on the open file ``fd`` and refuse with ``DiskLocked`` (naming ``path``)
    if another open conflicts. The locks last until ``fd`` is closed; on refusal the caller closes it."""
    locked, probes = plan(mode)
    try:
        for byte in locked:
            _fcntl_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, byte)
        others = {probe.byte for probe in probes if _held_by_others(fd, probe.byte)}
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            raise DiskLocked(f"{path} is in use: another open of it holds an exclusive lock") from None
        raise StorageError(f"cannot take the image lock of {path}: {error.strerror}") from error
    refused = conflicts(mode, others)
    if refused:
        raise DiskLocked(
            f"{path} is in use by another process or open (a qemu, or another Overland): "
            f"{refused[0].explain()}; a disk has one writer at a time"
        )
