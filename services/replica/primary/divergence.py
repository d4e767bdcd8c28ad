"""Changes to a replicated disk file that its tracking log did not see, found before they diverge the
DR copy silently: the next cycle resyncs (by block hash compare), and health names why.

- **While the site was down.** At a clean stop the site records each disk file's size, modification
  time and identity (``<disk>.stamp`` beside its tracking log); at start a file that differs from its
  stamp (``what_changed``), or that has no stamp though its log was closed cleanly, needs a resync.
  (A log not closed cleanly, a crash, needs one anyway: ``tracking/log.py``.)
- **While the site runs.** A fanotify group (``OutsideWrites``) watches each disk file for writes
  (FAN_MODIFY, which write(2), pwrite, truncate and O_DIRECT writes all raise) and reports any by
  another process than the site's; the manager asks at every scheduler tick and before every cut.
  The kernel merges the events of one process on one file while they are unread, so the site's own
  writes cost one queued event, not one per write. fanotify needs CAP_SYS_ADMIN: without it the site
  says so once in its log, and only the stamps (at restart) catch an outside writer. Writes through
  a shared mmap raise no event and are not seen while the site runs.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import struct
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from services.replica.disks import FileId

log = logging.getLogger(__name__)

STAMP_SUFFIX = ".stamp"

# <sys/fanotify.h>
FAN_MODIFY = 0x00000002
FAN_Q_OVERFLOW = 0x00004000
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
AT_FDCWD = -100
# struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid.
EVENT = struct.Struct("=IBBHQii")
READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class FileStamp:
    """What a disk file looked like at a clean stop."""

    size: int
    mtime_ns: int
    dev: int
    ino: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileStamp:
        status = os.stat(path)
        return cls(status.st_size, status.st_mtime_ns, status.st_dev, status.st_ino)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> FileStamp | None:
        try:
            fields = json.loads(data)
            return cls(int(fields["size"]), int(fields["mtime_ns"]), int(fields["dev"]), int(fields["ino"]))
        except (ValueError, KeyError, TypeError):
            return None


def what_changed(before: FileStamp, now: FileStamp) -> str:
    """Why the file is not as it was at the stop (pure); empty when it is."""
    changes = []
    if (before.dev, before.ino) != (now.dev, now.ino):
        changes.append("it is another file now (device and inode differ)")
    if before.size != now.size:
        changes.append(f"its size went from {before.size} to {now.size} bytes")
    if before.mtime_ns != now.mtime_ns:
        changes.append("it was modified")
    return "; ".join(changes)


def stamp_path(log_path: Path) -> Path:
    """Where the stamp of the disk whose tracking log is ``log_path`` goes."""
    return log_path.with_name(log_path.stem + STAMP_SUFFIX)


def record_stamp(log_path: Path, disk_path: str | os.PathLike[str]) -> None:
    """At a clean stop, after the disk file's last write: how the file looks now."""
    try:
        stamp = FileStamp.of(disk_path)
    except OSError as error:
        log.warning("could not stamp the disk file", extra={"disk": str(disk_path), "error": str(error)})
        return
    stamp_path(log_path).write_bytes(stamp.encode())


def changed_while_down(log_path: Path, disk_path: str | os.PathLike[str], log_was_clean: bool) -> str:
    """Why the disk file needs a resync at start (empty: it does not); the stamp is used up."""
    path = stamp_path(log_path)
    try:
        stamp = FileStamp.decode(path.read_bytes())
    except FileNotFoundError:
        stamp = None
    path.unlink(missing_ok=True)
    if stamp is None:
        if not log_was_clean:
            return ""  # the log says it already (a crash)
        return "the site has no record of the disk file at its last stop"
    change = what_changed(stamp, FileStamp.of(disk_path))
    return f"the disk file changed while the site was down: {change}" if change else ""


class OutsideWrites:
    """Writes to watched files by any other process than this one (fanotify). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writers: dict[FileId, set[str]] = {}
        self._paths: dict[FileId, str] = {}
        self.unavailable = ""
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.fanotify_init(
            FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY | os.O_LARGEFILE
        )
        self._fd: int | None = fd if fd >= 0 else None
        if self._fd is None:
            self.unavailable = os.strerror(ctypes.get_errno())
            log.warning(
                "writes by other programs to replicated disks are seen only at a restart",
                extra={"fanotify": self.unavailable},
            )

    def _mark(self, flags: int, path: str) -> int:
        assert self._fd is not None
        mark = self._libc.fanotify_mark
        mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        return int(mark(self._fd, flags, FAN_MODIFY, AT_FDCWD, os.fsencode(path)))

    def watch(self, key: FileId, path: str) -> None:
        """Watch the file ``key`` (at ``path``) from now on."""
        if self._fd is None:
            return
        if self._mark(FAN_MARK_ADD, path) != 0:
            error = os.strerror(ctypes.get_errno())
            log.warning(
                "could not watch a disk file for outside writes", extra={"disk": path, "error": error}
            )
            return
        with self._lock:
            self._writers.setdefault(key, set())
            self._paths[key] = path

    def unwatch(self, key: FileId) -> None:
        with self._lock:
            path = self._paths.pop(key, None)
            self._writers.pop(key, None)
        if self._fd is not None and path is not None:
            self._mark(FAN_MARK_REMOVE, path)  # a file gone meanwhile took its mark with it

    def writers(self, key: FileId) -> list[str]:
        """The other processes that wrote file ``key`` since the last call (e.g. "pid 42 (dd)")."""
        self._drain()
        with self._lock:
            found = self._writers.get(key)
            if not found:
                return []
            self._writers[key] = set()
            return sorted(found)

    def _drain(self) -> None:
        if self._fd is None:
            return
        me = os.getpid()
        while True:
            try:
                data = os.read(self._fd, READ_BYTES)
            except BlockingIOError:
                return
            for mask, fd, pid in _events(data):
                try:
                    if mask & FAN_Q_OVERFLOW:
                        self._everyone("an unknown process (the fanotify queue overflowed)")
                    elif pid != me and fd >= 0:
                        status = os.fstat(fd)
                        with self._lock:
                            if (status.st_dev, status.st_ino) in self._writers:
                                self._writers[(status.st_dev, status.st_ino)].add(_process(pid))
                finally:
                    if fd >= 0:
                        os.close(fd)

    def _everyone(self, writer: str) -> None:
        with self._lock:
            for found in self._writers.values():
                found.add(writer)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _events(data: bytes) -> list[tuple[int, int, int]]:
    """(mask, fd, pid) of each event in a read of the fanotify group (pure)."""
    events = []
    offset = 0
    while offset + EVENT.size <= len(data):
        length, _version, _reserved, _metadata, mask, fd, pid = EVENT.unpack_from(data, offset)
        if length < EVENT.size:
            break
        events.append((mask, fd, pid))
        offset += length
    return events


def _process(pid: int) -> str:
    """A process by id and, while it still runs, its command name."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({name})"
