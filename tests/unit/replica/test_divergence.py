"""Changes the tracking log did not see (``primary/divergence.py``): the stamp of a disk file at a
clean stop and what a later look at it says (property-tested), the fanotify watch with a real outside
writer (dd), and a resync required while a cut is out surviving that cut's release."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from services.replica.disks import file_id
from services.replica.primary.divergence import (
    EVENT,
    FAN_Q_OVERFLOW,
    FileStamp,
    OutsideWrites,
    _events,
    changed_while_down,
    record_stamp,
    what_changed,
)
from services.replica.primary.tracking import ChangeLog

STAMPS = st.builds(
    FileStamp,
    st.integers(0, 2**63),
    st.integers(0, 2**63),
    st.integers(0, 2**32),
    st.integers(0, 2**63),
)


@given(STAMPS, STAMPS)
def test_what_changed_names_each_difference_and_only_those(before: FileStamp, now: FileStamp) -> None:
    words = what_changed(before, now)
    assert (words == "") == (before == now)
    assert ("another file" in words) == ((before.dev, before.ino) != (now.dev, now.ino))
    assert ("size went from" in words) == (before.size != now.size)
    assert ("modified" in words) == (before.mtime_ns != now.mtime_ns)
    assert FileStamp.decode(before.encode()) == before


def test_stamps_at_a_stop_and_what_start_makes_of_them(tmp_path: Path) -> None:
    disk = tmp_path / "d0.vhd"
    disk.write_bytes(b"\0" * 8192)
    log_path = tmp_path / "d0.hrl"
    record_stamp(log_path, disk)
    assert changed_while_down(log_path, disk, log_was_clean=True) == ""
    # The stamp is used once: a clean log without one is a stop the site did not record.
    assert "no record" in changed_while_down(log_path, disk, log_was_clean=True)
    # A crash (unclean log) says it already.
    assert changed_while_down(log_path, disk, log_was_clean=False) == ""
    record_stamp(log_path, disk)
    with disk.open("r+b") as file:
        file.write(b"x")
        os.utime(file.fileno(), ns=(1, 2))
    assert "modified" in changed_while_down(log_path, disk, log_was_clean=True)
    record_stamp(log_path, disk)
    # Replaced by another file (made while the old one still holds its inode).
    new = tmp_path / "new.vhd"
    new.write_bytes(b"\0" * 4096)
    new.replace(disk)
    why = changed_while_down(log_path, disk, log_was_clean=True)
    assert "another file" in why
    assert "size went from 8192 to 4096" in why


def test_events_are_read_from_a_packed_buffer() -> None:
    packed = EVENT.pack(EVENT.size, 3, 0, EVENT.size, 2, 7, 100) + EVENT.pack(
        EVENT.size, 3, 0, EVENT.size, FAN_Q_OVERFLOW, -1, 0
    )
    assert _events(packed) == [(2, 7, 100), (FAN_Q_OVERFLOW, -1, 0)]
    assert _events(packed[:10]) == []


def test_only_other_processes_writes_are_reported(tmp_path: Path) -> None:
    disk = tmp_path / "d0.vhd"
    disk.write_bytes(b"\0" * 65536)
    other = tmp_path / "other.vhd"
    other.write_bytes(b"\0" * 65536)
    watch = OutsideWrites()
    assert watch.unavailable == ""  # the tests run with CAP_SYS_ADMIN, as a site should
    try:
        key = file_id(disk)
        watch.watch(key, str(disk))
        watch.watch(file_id(other), str(other))
        # This process's own writes are the site's.
        with disk.open("r+b") as file:
            for offset in range(0, 65536, 4096):
                file.seek(offset)
                file.write(b"\x01" * 4096)
        assert watch.writers(key) == []
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={disk}", "bs=4k", "count=1", "conv=notrunc", "status=none"],
            check=True,
            timeout=30,
        )
        (writer,) = watch.writers(key)
        assert writer.startswith("pid ")
        # Reported once, and for that file only.
        assert watch.writers(key) == []
        assert watch.writers(file_id(other)) == []
        watch.unwatch(key)
        subprocess.run(["truncate", "-s", "4096", str(disk)], check=True, timeout=30)
        assert watch.writers(key) == []
    finally:
        watch.close()


def test_a_resync_required_while_a_cut_is_out_outlives_the_cut(tmp_path: Path) -> None:
    log = ChangeLog.open(tmp_path / "d0.hrl", 1024 * 1024, 65536)
    log.require_resync("written outside the export by pid 1 (dd)")
    cut = log.cut()
    assert cut.resync
    # Another outside write while the resync cut is being shipped: shipping it does not clear it.
    log.require_resync("written outside the export by pid 2 (dd)")
    log.release(cut, shipped=True)
    assert log.resync_required
    assert "pid 2" in log.resync_reason
    again = log.cut()
    log.release(again, shipped=True)
    assert not log.resync_required
    log.close()
    # Durable: a reopened log still knows of a resync required before the close.
    log = ChangeLog.open(tmp_path / "d0.hrl", 1024 * 1024, 65536)
    assert log.found_clean
    log.require_resync("changed while down")
    log.close()
    reopened = ChangeLog.open(tmp_path / "d0.hrl", 1024 * 1024, 65536)
    assert reopened.resync_required
    assert not reopened.found_clean
    reopened.close()
