"""VM disks: an ext4 root filesystem made from the guest template inside a VHD, and reading one back.

``make_vm_disk`` runs ``mkfs.ext4 -d`` on a sparse raw scratch file (no mount, no root needed) and
copies the filesystem's data ranges into a dynamic (default) or fixed VHD made by the replica
service's own VHD code, so the disk is exactly ``size`` bytes, as the NBD export and replication
see it. The readers (``raw_copy``, ``check_filesystem``, ``replay_journal``, ``read_guest_file``) are
what tests and failover checks use to look inside a guest's disk from the host.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.replica.vhd import DiskFormat, create_dynamic, create_fixed, open_disk
from services.replica.vm.errors import GuestImageError, InvalidVmSpec

DISK_KINDS = ("dynamic", "fixed", "raw")
MIN_DISK_SIZE = 16 * 1024 * 1024
COPY_CHUNK = 4 * 1024 * 1024
TOOL_TIMEOUT = 300.0
ROOT_LABEL = "overland-root"


def run_tool(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a disk tool with a timeout; a failure (when ``check``) raises ``GuestImageError``."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=TOOL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GuestImageError(f"{argv[0]}: {error}") from error
    if check and done.returncode != 0:
        errors = done.stderr.decode(errors="replace")[-2000:]
        raise GuestImageError(f"{' '.join(argv[:3])} ... failed ({done.returncode}): {errors}")
    return done


def data_ranges(path: Path) -> Iterator[tuple[int, int]]:
    """The ``(offset, length)`` ranges of a sparse file that hold data (SEEK_DATA / SEEK_HOLE)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                return  # ENXIO: only a hole is left
            end = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, end - start
            offset = end
    finally:
        os.close(fd)


def make_vm_disk(template: Path, path: Path, size: int, kind: str = "dynamic") -> Path:
    """A new disk at ``path`` (which must not exist): ``size`` bytes holding an ext4 filesystem with
    the files of the ``template`` folder, as a ``dynamic`` or ``fixed`` VHD or a ``raw`` file."""
    if kind not in DISK_KINDS:
        raise InvalidVmSpec(f"disk kind must be one of {DISK_KINDS}, got {kind!r}")
    if size < MIN_DISK_SIZE or size % 512:
        raise InvalidVmSpec(f"disk size must be a multiple of 512 of at least {MIN_DISK_SIZE} bytes")
    if not (template / "sbin" / "init").exists():
        raise GuestImageError(f"{template} is not a guest root template (no sbin/init)")
    if path.exists():
        raise InvalidVmSpec(f"{path} already exists")
    raw = path if kind == "raw" else path.with_name(f".{path.name}.raw")
    with raw.open("xb") as file:
        file.truncate(size)
    try:
        run_tool(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(template), str(raw)])
        if kind == "raw":
            return path
        image = create_dynamic(path, size) if kind == "dynamic" else create_fixed(path, size)
        disk = open_disk(image, writable=True, fmt=DiskFormat.VHD)
        try:
            with raw.open("rb") as source:
                for start, length in data_ranges(raw):
                    for offset in range(start, start + length, COPY_CHUNK):
                        source.seek(offset)
                        disk.write(offset, source.read(min(COPY_CHUNK, start + length - offset)))
            disk.flush()
        finally:
            disk.close()
        return path
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        if raw != path:
            raw.unlink(missing_ok=True)


def raw_copy(image: str | Path, fmt: str, destination: Path) -> Path:
    """A raw copy of a disk image (``fmt`` as qemu names it: ``vpc``, ``raw``...) or NBD URL, for the
    e2fsprogs tools, which read only raw filesystems."""
    run_tool(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(destination)])
    return destination


@dataclass(frozen=True)
class FsckResult:
    """``e2fsck -fn`` of a filesystem: exit code 0 means clean (nothing to fix, no journal to replay)."""

    code: int
    output: str

    @property
    def clean(self) -> bool:
        return self.code == 0


def check_filesystem(raw: Path) -> FsckResult:
    """A forced read-only check (``e2fsck -fn``); changes nothing."""
    done = run_tool(["e2fsck", "-f", "-n", str(raw)], check=False)
    return FsckResult(done.returncode, (done.stdout + done.stderr).decode(errors="replace"))


def replay_journal(raw: Path) -> None:
    """Replay the journal of a filesystem whose writer stopped without unmounting, as the kernel
    does at mount (``e2fsck -E journal_only``); writes ``raw``, so use it on a copy."""
    done = run_tool(["e2fsck", "-y", "-E", "journal_only", str(raw)], check=False)
    # 0: nothing to do, 1: the journal was replayed.
    if done.returncode not in (0, 1):
        raise GuestImageError(f"journal replay failed ({done.returncode}): {done.stdout.decode()[-2000:]}")


def read_guest_file(raw: Path, guest_path: str) -> bytes:
    """A file's contents read from a raw ext4 image with ``debugfs`` (no mount)."""
    done = run_tool(["debugfs", "-R", f"cat {guest_path}", str(raw)])
    errors = done.stderr.decode(errors="replace")
    if "not found" in errors or "File not found" in errors:
        raise GuestImageError(f"{guest_path} is not in {raw}: {errors.strip()}")
    return done.stdout
