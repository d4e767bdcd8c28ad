"""kill -9 of the NBD server while qemu-io writes: every write qemu-io saw acknowledged is in the log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.replica.primary.tracking import ChangeLog

pytestmark = pytest.mark.qemu

DISK = 64 * 1024 * 1024
TRACK = 64 * 1024
WRITES = 400
KILL_AFTER = 150

SERVER = """
import sys, threading
from services.replica.nbd import NbdServer
from services.replica.primary.tracking import ChangeLog, TrackedDevice
from services.replica.vhd import DiskFormat, open_disk

server = NbdServer()
log = ChangeLog.open(sys.argv[2], {disk}, {track})
server.add_export("disk0", TrackedDevice(open_disk(sys.argv[1], writable=True, fmt=DiskFormat.RAW), log))
print(server.start(), flush=True)
threading.Event().wait()
"""


def test_acknowledged_writes_survive_a_killed_nbd_server(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"")
    os.truncate(disk, DISK)
    log = tmp_path / "disk.hrl"
    root = Path(__file__).resolve().parents[3]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(disk=DISK, track=TRACK), str(disk), str(log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    client = None
    acked: list[tuple[int, int]] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        # Scattered writes, each a new tracking block, so every acknowledgement needs a log record.
        commands = []
        for i in range(WRITES):
            offset = (i * 7919 % (DISK // TRACK)) * TRACK + (i % 3) * 512
            commands += ["-c", f"write -P {i % 250 + 1} {offset} 4096"]
        # stdbuf: qemu-io prints each result as the write is acknowledged, not when its buffer fills.
        client = subprocess.Popen(
            ["stdbuf", "-oL", "qemu-io", "-f", "raw", f"nbd://127.0.0.1:{port}/disk0", *commands],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert client.stdout is not None
        for line in client.stdout:
            match = re.match(r"wrote (\d+)/\d+ bytes at offset (\d+)", line)
            if match:
                acked.append((int(match.group(2)), int(match.group(1))))
                if len(acked) == KILL_AFTER:
                    os.kill(server.pid, signal.SIGKILL)
                    break
    finally:
        server.kill()
        server.wait(timeout=30)
        if client is not None:
            client.kill()
            client.wait(timeout=30)
    assert len(acked) == KILL_AFTER
    reopened = ChangeLog.open(log, DISK, TRACK)
    assert reopened.resync_required
    logged = {b for first, count in reopened.changed_runs() for b in range(first, first + count)}
    missing = [(o, n) for o, n in acked if not set(range(o // TRACK, (o + n - 1) // TRACK + 1)) <= logged]
    assert not missing, f"acknowledged writes missing from the log: {missing[:5]}"
    reopened.close()
