"""What the guest says on its serial console and writes to its disk, read back (pure).

The guest's scripts (``services.replica.vm.scripts``) log with the prefixes below. The workload appends
``boot=B seq=N`` to its log file and fsyncs it before printing ``workload boot=B seq=N synced``; so every
record the console reports as synced must be in the file after any stop, graceful or not
(``lost_records``). The probe prints ``probe ADDRESS reply N`` for each answered ping
(``probe_replies``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INITRAMFS_PREFIX = "overland-initramfs: "
GUEST_PREFIX = "overland-guest: "
# The initramfs ran (the boot-time baseline, the accelerator probe).
INITRAMFS_READY = f"{INITRAMFS_PREFIX}ready"
NETWORK_UP = f"{GUEST_PREFIX}network up"
ROOT_READ_ONLY = f"{GUEST_PREFIX}shutdown root read-only"
SYNCED = re.compile(rf"^{GUEST_PREFIX}workload boot=(\d+) seq=(\d+) synced\r?$", re.MULTILINE)
ADDRESS = re.compile(rf"^{GUEST_PREFIX}nic (\d+) (\S+) address (\S+)\r?$", re.MULTILINE)
RECORD = re.compile(r"^boot=(\d+) seq=(\d+)$")
PROBE_REPLY = re.compile(rf"^{GUEST_PREFIX}probe (\S+) reply \d+\r?$", re.MULTILINE)


@dataclass(frozen=True)
class WorkloadRecord:
    """One line of the workload's log file: the guest's boot number and the record's number in it."""

    boot: int
    seq: int


def synced_records(console: str) -> dict[int, int]:
    """Per boot, the highest record the console reported as synced (durable)."""
    synced: dict[int, int] = {}
    for boot, seq in SYNCED.findall(console):
        synced[int(boot)] = max(synced.get(int(boot), 0), int(seq))
    return synced


def applied_addresses(console: str) -> dict[int, list[str]]:
    """Per NIC index, the ``ADDR/LEN`` addresses the guest reported as applied."""
    applied: dict[int, list[str]] = {}
    for index, _device, address in ADDRESS.findall(console):
        applied.setdefault(int(index), []).append(address)
    return applied


def probe_replies(console: str) -> dict[str, int]:
    """Per target, how many of the probe's pings (``PROBE_CONF``) were answered in ``console``."""
    replies: dict[str, int] = {}
    for target in PROBE_REPLY.findall(console):
        replies[target] = replies.get(target, 0) + 1
    return replies


def parse_workload_log(text: str) -> list[WorkloadRecord]:
    """The records of the workload's log file, in file order. A final line without its newline (a
    write cut by a crash) is left out; any other line off the format means corruption."""
    lines = text.split("\n")
    # The piece after the last newline is empty, or a record whose write was cut short.
    records = []
    for number, line in enumerate(lines[:-1], 1):
        match = RECORD.match(line)
        if match is None:
            raise ValueError(f"workload log line {number} is not a record: {line!r}")
        records.append(WorkloadRecord(int(match.group(1)), int(match.group(2))))
    return records


def lost_records(records: list[WorkloadRecord], synced: dict[int, int]) -> list[WorkloadRecord]:
    """The records reported as synced (``synced_records``) that the log file does not hold: empty when
    every acknowledged write survived."""
    present = set(records)
    return [
        WorkloadRecord(boot, seq)
        for boot, last in sorted(synced.items())
        for seq in range(1, last + 1)
        if WorkloadRecord(boot, seq) not in present
    ]
