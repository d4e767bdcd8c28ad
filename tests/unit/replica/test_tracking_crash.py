"""kill -9 of a process writing through a tracked device: every acknowledged write is in the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from services.replica.primary.tracking import ChangeLog

DISK = 4 * 1024 * 1024
BLOCK = 4096

WRITER = """
import sys
from services.replica.primary.tracking import ChangeLog, TrackedDevice
from services.replica.vhd import DiskFormat, open_disk

image = open_disk(sys.argv[1], writable=True, fmt=DiskFormat.RAW)
device = TrackedDevice(image, ChangeLog.open(sys.argv[2], {disk}, {block}))
value = 7
for _ in range(100000):
    value = (value * 1103515245 + 12345) % 2**31
    offset = value % ({disk} - 20000)
    length = 1 + value % 20000
    device.write(offset, b"w" * length)
    # Printed only after write() returned: this is the acknowledgement a client would get.
    print(offset, length, flush=True)
"""


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(DISK))
    log = tmp_path / "disk.hrl"
    script = WRITER.format(disk=DISK, block=BLOCK)
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(disk), str(log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert process.stdout is not None
    acked: list[tuple[int, int]] = []
    try:
        for line in process.stdout:
            offset, length = map(int, line.split())
            acked.append((offset, length))
            if len(acked) == 300:
                os.kill(process.pid, signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=30)
    assert len(acked) == 300, "the writer died before acknowledging enough writes"
    reopened = ChangeLog.open(log, DISK, BLOCK)
    assert reopened.resync_required
    assert "not closed cleanly" in reopened.resync_reason
    logged = {b for first, count in reopened.changed_runs() for b in range(first, first + count)}
    for offset, length in acked:
        for block in range(offset // BLOCK, (offset + length - 1) // BLOCK + 1):
            assert block in logged, f"acknowledged write at {offset}+{length} is missing block {block}"
    reopened.close()
