"""qemu-compatible image locks: the pure plan against qemu's rules, and real OFD locks between opens.

The real qemu (qemu-img, qemu-io, qemu-system) against a disk Overland serves is in
tests/integration/replica/test_image_locking.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition
from services.replica.vhd import (
    DiskFormat,
    DiskLocked,
    create_differencing,
    create_dynamic,
    create_fixed,
    open_disk,
)
from services.replica.vhd.locking import (
    ALL_PERMS,
    BACKING,
    PERM_BASE,
    READER,
    SHARED_BASE,
    WRITER,
    LockMode,
    Perm,
    conflicts,
    plan,
)

REPO = Path(__file__).resolve().parents[3]
SIZE = 4 * 1024 * 1024
modes = st.builds(
    LockMode,
    st.integers(min_value=0, max_value=int(ALL_PERMS)).map(Perm),
    st.integers(min_value=0, max_value=int(ALL_PERMS)).map(Perm),
)


def test_the_writer_locks_the_bytes_a_qemu_writer_locks() -> None:
    # As /proc/locks shows for qemu-io and qemu-system-x86_64 -drive on a vpc image (qemu 7.2):
    # "consistent read", "write" and "resize" held, "write" and "resize" not shared.
    assert sorted(plan(WRITER)[0]) == [100, 101, 103, 201, 203]
    # qemu-img info and a read-only -drive: "consistent read" held, "write" and "resize" not shared.
    assert sorted(plan(BACKING)[0]) == [100, 201, 203]
    # qemu's -U (force-share): "consistent read" held, everything shared.
    assert plan(READER)[0] == [100]


@given(modes, modes)
def test_two_opens_conflict_exactly_when_qemu_says_they_do(first: LockMode, second: LockMode) -> None:
    # qemu's rule: an open may not take a permission another does not share, nor keep from others
    # a permission another holds. The byte tests find exactly that, whichever open comes second.
    incompatible = bool((second.perm & ~first.shared) | (first.perm & ~second.shared))
    assert bool(conflicts(second, set(plan(first)[0]))) == incompatible
    assert bool(conflicts(first, set(plan(second)[0]))) == incompatible


@given(modes)
def test_each_permission_held_or_not_shared_is_one_locked_byte(mode: LockMode) -> None:
    locked = plan(mode)[0]
    assert len(set(locked)) == len(locked)
    for i in range(4):
        assert (PERM_BASE + i in locked) == bool(mode.perm & (1 << i))
        assert (SHARED_BASE + i in locked) == (not mode.shared & (1 << i))


def test_overland_modes_against_each_other() -> None:
    assert conflicts(WRITER, set(plan(WRITER)[0]))
    assert conflicts(WRITER, set(plan(BACKING)[0]))
    assert not conflicts(WRITER, set(plan(READER)[0]))
    assert not conflicts(READER, set(plan(WRITER)[0]))
    assert not conflicts(BACKING, set(plan(BACKING)[0]))


@pytest.mark.parametrize("kind", ["fixed", "dynamic", "raw"])
def test_a_second_writable_open_in_the_same_process_is_refused_naming_the_file(
    kind: str, tmp_path: Path
) -> None:
    path = tmp_path / f"disk.{kind}"
    fmt = DiskFormat.VHD
    if kind == "fixed":
        create_fixed(path, SIZE)
    elif kind == "dynamic":
        create_dynamic(path, SIZE)
    else:
        path.write_bytes(bytes(SIZE))
        fmt = DiskFormat.RAW
    first = open_disk(path, writable=True, fmt=fmt)
    try:
        with pytest.raises(DiskLocked, match="in use") as refused:
            open_disk(path, writable=True, fmt=fmt)
        assert str(path) in refused.value.message
        assert isinstance(refused.value, FailedPrecondition)
        # A read-only open is qemu's -U: it neither blocks nor is blocked.
        reader = open_disk(path, fmt=fmt)
        assert reader.virtual_size == SIZE
        reader.close()
    finally:
        first.close()
    # Closing released the locks.
    open_disk(path, writable=True, fmt=fmt).close()


def test_a_refused_open_leaves_the_holder_locked(tmp_path: Path) -> None:
    path = create_dynamic(tmp_path / "d.vhd", SIZE)
    first = open_disk(path, writable=True)
    for _ in range(3):
        with pytest.raises(DiskLocked):
            open_disk(path, writable=True)
    with pytest.raises(DiskLocked):
        open_disk(path, writable=True)
    first.close()


def test_a_writable_child_keeps_its_parent_from_being_written(tmp_path: Path) -> None:
    parent = create_dynamic(tmp_path / "p.vhd", SIZE)
    child = open_disk(create_differencing(tmp_path / "c.vhd", parent), writable=True)
    try:
        with pytest.raises(DiskLocked, match=r"p\.vhd"):
            open_disk(parent, writable=True)
        # Another child of the same parent reads it too: parents are shared for reading.
        sibling = open_disk(create_differencing(tmp_path / "s.vhd", parent), writable=True)
        sibling.close()
    finally:
        child.close()
    open_disk(parent, writable=True).close()


HOLDER = """
import sys
from services.replica.vhd import open_disk
disk = open_disk(sys.argv[1], writable=True)
print("open", flush=True)
sys.stdin.read()
"""


def test_another_process_is_refused_and_gets_the_disk_once_the_holder_exits(tmp_path: Path) -> None:
    path = create_dynamic(tmp_path / "d.vhd", SIZE)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(DiskLocked, match=str(path)):
            open_disk(path, writable=True)
    finally:
        holder.communicate("", timeout=30)
    open_disk(path, writable=True).close()
