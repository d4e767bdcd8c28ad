"""The disks a site has open: each disk file opened once, served by the site's NBD export, and the one
device every writer of that disk goes through.

A disk file belongs to one VM: whoever defines it (a VM's definition, a replication) claims it
(``claim``), and a claim of the same file for another VM or another disk is refused with
``DiskOwned`` (ALREADY_EXISTS) naming the owner. Files are known by device and inode, never by path,
so a hard link, a symlink or another mount of the file is the same file. Claims live as long as what
made them: the VM definitions and replications a site loads at start claim their disks again, so the
ownership survives a restart.

A disk is opened by whoever needs it first (a VM that starts, a replication that is enabled) and
closed when the last of them lets go. Both get the same ``SiteDisk``: the VM runtime hands qemu its
NBD export, the replication manager wraps it with change tracking. Enabling replication on a disk a
running VM writes swaps the device behind the export under the disk's write gate: writes in flight
finish on the untracked device, every later one is tracked. That is correct without stopping the VM,
because a new replication starts with a full copy cut after the swap; disabling swaps back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from services.common.errors import AlreadyExists, FailedPrecondition
from services.replica.errors import ReplicaError
from services.replica.locks import WriteGate
from services.replica.nbd import NbdServer
from services.replica.vhd import BlockDevice, Buffer, DiskFormat, open_disk


class DiskInUse(ReplicaError, FailedPrecondition):
    """The disk file is open under another name, or the name is taken by another file."""


class DiskOwned(ReplicaError, AlreadyExists):
    """The disk file (by whatever path) belongs to another VM, or to another disk of the same VM."""


FileId = tuple[int, int]


def file_id(path: str | Path) -> FileId:
    """What identifies a file whatever the path to it: its device and inode (symlinks followed)."""
    status = os.stat(path)
    return status.st_dev, status.st_ino


@dataclass
class Claim:
    """Disk ``disk`` of VM ``vm`` is the file at ``path``, for ``users`` ("vm", "replication")."""

    vm: str
    disk: str
    path: Path
    users: set[str] = field(default_factory=set)


def export_name(vm_name: str, disk: str) -> str:
    """The NBD export name of a VM disk."""
    return f"{vm_name}/{disk}"


def nbd_unix_url(export: str, socket_path: Path) -> str:
    """The ``nbd+unix://`` URL of an export on the site's unix socket (the name percent-encoded)."""
    return f"nbd+unix:///{quote(export, safe='/')}?socket={socket_path}"


class SiteDisk:
    """One open disk file: a ``BlockDevice`` whose writes reach the current target (the file, or the
    file behind a replication's change tracking). The NBD export serves this object."""

    def __init__(self, name: str, path: Path, base: BlockDevice, key: FileId = (0, 0)):
        self.name = name
        self.path = path
        self.base = base
        # The file's device and inode when it was opened.
        self.key = key
        self._target: BlockDevice = base
        # Writes hold it shared; a swap holds it exclusively, so no write straddles the swap.
        self._gate = WriteGate()

    @property
    def virtual_size(self) -> int:
        return self.base.virtual_size

    @property
    def block_size(self) -> int:
        return self.base.block_size

    @property
    def target(self) -> BlockDevice:
        return self._target

    def read(self, offset: int, length: int) -> bytes:
        # Every target reads the same file: a read racing a swap reads the same bytes either way.
        return self._target.read(offset, length)

    def write(self, offset: int, data: Buffer) -> None:
        self._gate.enter()
        try:
            self._target.write(offset, data)
        finally:
            self._gate.leave()

    def write_zeroes(self, offset: int, length: int) -> None:
        self._gate.enter()
        try:
            self._target.write_zeroes(offset, length)
        finally:
            self._gate.leave()

    def flush(self) -> None:
        self.base.flush()

    def allocated_ranges(self) -> list[tuple[int, int]]:
        return self.base.allocated_ranges()

    def close(self) -> None:
        """Nothing: the file is closed by ``SiteDisks.release`` when its last user lets go."""

    def replace_file(
        self, path: Path, base: BlockDevice, under: Callable[[], None], key: FileId = (0, 0)
    ) -> BlockDevice:
        """Serve the file ``path`` (opened as ``base``; ``key`` its device and inode) instead of this
        one: with every write held off (and in flight ended), run ``under`` (e.g. the last copy of a
        merge), then switch. Returns the old base, which the caller closes."""
        self._gate.lock()
        try:
            under()
            old, self.base, self._target, self.path, self.key = self.base, base, base, path, key
        finally:
            self._gate.unlock()
        return old

    def swap(self, target: BlockDevice) -> None:
        """Send every later write to ``target`` (which writes ``base``) once the writes in flight end."""
        self._gate.lock()
        try:
            self._target = target
        finally:
            self._gate.unlock()


@dataclass
class _Entry:
    disk: SiteDisk
    fmt: DiskFormat
    users: set[str] = field(default_factory=set)


class SiteDisks:
    """Every disk the site has open, by export name (``<vm>/<disk>``). Thread-safe."""

    def __init__(self, exporter: NbdServer | None = None):
        self._exporter = exporter
        self._entries: dict[str, _Entry] = {}
        self._claims: dict[FileId, Claim] = {}
        self._lock = threading.Lock()

    @property
    def unix_socket(self) -> Path | None:
        return self._exporter.unix_path if self._exporter is not None else None

    def open(
        self,
        name: str,
        path: str | Path,
        user: str,
        fmt: DiskFormat = DiskFormat.VHD,
        opener: Callable[[Path], BlockDevice] | None = None,
    ) -> SiteDisk:
        """The disk ``path`` as export ``name`` for ``user`` ("vm", "replication", "point"), opened as
        ``fmt`` (checked, and image-locked as qemu does; by ``opener`` when given) if nobody has it
        open yet. ``DiskInUse`` if the name serves another file or the file another name, or the file
        is open as another format."""
        resolved = Path(os.path.abspath(path))
        key = file_id(resolved)
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                if entry.disk.key != key:
                    raise DiskInUse(
                        f"disk {name!r} is open as {entry.disk.path}, not {resolved}: one name, one file"
                    )
                if entry.fmt is not fmt:
                    raise DiskInUse(f"disk {name!r} is open as {entry.fmt.value}, not {fmt.value}")
                entry.users.add(user)
                return entry.disk
            for other, held in self._entries.items():
                if held.disk.key == key:
                    raise DiskInUse(f"{resolved} is already open as disk {other!r} (as {held.disk.path})")
            device = opener(resolved) if opener is not None else open_disk(resolved, writable=True, fmt=fmt)
            disk = SiteDisk(name, resolved, device, key)
            if self._exporter is not None:
                try:
                    self._exporter.add_export(name, disk)
                except BaseException:
                    disk.base.close()
                    raise
            self._entries[name] = _Entry(disk, fmt, {user})
            return disk

    def release(self, disk: SiteDisk, user: str) -> None:
        """``user`` is done with ``disk``; the last user's release unexports and closes it."""
        with self._lock:
            entry = self._entries.get(disk.name)
            if entry is None or entry.disk is not disk:
                return
            entry.users.discard(user)
            if entry.users:
                return
            del self._entries[disk.name]
            if self._exporter is not None:
                self._exporter.remove_export(disk.name)
        disk.base.close()

    def claim(self, vm: str, disk: str, path: str | Path, user: str) -> None:
        """Record that the file at ``path`` is disk ``disk`` of VM ``vm`` (for ``user``). ``DiskOwned``
        if that file, reached by any path, is another VM's or another disk's. A file that does not
        exist is claimed by nobody (opening it says what is wrong)."""
        try:
            key = file_id(path)
        except FileNotFoundError:
            return
        with self._lock:
            held = self._claims.get(key)
            if held is None:
                self._claims[key] = Claim(vm, disk, Path(os.path.abspath(path)), {user})
                return
            if (held.vm, held.disk) != (vm, disk):
                same = "" if held.path == Path(os.path.abspath(path)) else f" (the same file as {held.path})"
                raise DiskOwned(
                    f"{path}{same} is disk {held.disk!r} of VM {held.vm!r}: a disk file belongs to one VM"
                )
            held.users.add(user)

    def claim_all(self, vm: str, disks: Iterable[tuple[str, str | Path]], user: str) -> None:
        """``claim`` each ``(disk, path)`` of VM ``vm``: all of them, or (``DiskOwned``) none."""
        done: list[str] = []
        try:
            for disk, path in disks:
                self.claim(vm, disk, path, user)
                done.append(disk)
        except BaseException:
            for disk in done:
                self.unclaim(vm, disk, user)
            raise

    def unclaim(self, vm: str, disk: str, user: str) -> None:
        """``user`` no longer holds disk ``disk`` of VM ``vm``; the last one's release frees the file."""
        with self._lock:
            for key, held in list(self._claims.items()):
                if (held.vm, held.disk) == (vm, disk):
                    held.users.discard(user)
                    if not held.users:
                        del self._claims[key]

    def unclaim_file(self, vm: str, disk: str, path: str | Path, user: str) -> None:
        """``unclaim`` of one file of disk ``disk`` of VM ``vm`` (the one at ``path``), when the disk
        moves to another file (a failover's disk at a recovery point, and back)."""
        resolved = Path(os.path.abspath(path))
        with self._lock:
            for key, held in list(self._claims.items()):
                if (held.vm, held.disk, held.path) == (vm, disk, resolved):
                    held.users.discard(user)
                    if not held.users:
                        del self._claims[key]

    def owner(self, path: str | Path) -> tuple[str, str] | None:
        """The VM and disk the file at ``path`` belongs to, if any."""
        try:
            key = file_id(path)
        except FileNotFoundError:
            return None
        with self._lock:
            held = self._claims.get(key)
            return (held.vm, held.disk) if held is not None else None

    def replace_file(self, name: str, path: Path, base: BlockDevice, under: Callable[[], None]) -> None:
        """Export ``name`` serves the file ``path`` (``base``) from now on (``SiteDisk.replace_file``);
        the old base is closed."""
        resolved = Path(os.path.abspath(path))
        key = file_id(resolved)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise DiskInUse(f"disk {name!r} is not open at this site")
            for other, held in self._entries.items():
                if other != name and held.disk.key == key:
                    raise DiskInUse(f"{resolved} is already open as disk {other!r} (as {held.disk.path})")
            old = entry.disk.replace_file(resolved, base, under, key)
        old.close()

    def get(self, name: str) -> SiteDisk | None:
        with self._lock:
            entry = self._entries.get(name)
        return entry.disk if entry is not None else None

    def users(self, name: str) -> set[str]:
        with self._lock:
            entry = self._entries.get(name)
            return set(entry.users) if entry is not None else set()

    def url(self, name: str) -> str:
        """Where qemu finds export ``name``: the NBD server's unix socket (it reaches across network
        namespaces, which 127.0.0.1 does not)."""
        socket_path = self.unix_socket
        if socket_path is None:
            raise FailedPrecondition("this site's NBD export has no unix socket")
        return nbd_unix_url(name, socket_path)

    def close(self) -> None:
        """Close every disk still open (at shutdown, after the export stopped)."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            if self._exporter is not None:
                self._exporter.remove_export(entry.disk.name)
            entry.disk.base.close()
