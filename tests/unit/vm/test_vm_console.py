"""Reading back what the guest says on its console and writes to its disk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.replica.vm import (
    WorkloadRecord,
    applied_addresses,
    lost_records,
    parse_workload_log,
    probe_replies,
    synced_records,
)

CONSOLE = (
    "[    5.9] EXT4-fs (vda): mounted filesystem\r\n"
    "overland-guest: nic 0 eth0 mac 52:54:00:00:00:01 up\r\n"
    "overland-guest: nic 0 eth0 address 192.0.2.10/24\r\n"
    "overland-guest: nic 0 eth0 address 198.51.100.10/24\r\n"
    "overland-guest: nic 1 eth1 address 203.0.113.5/28\r\n"
    "overland-guest: network up\r\n"
    "overland-guest: workload boot=1 seq=1 synced\r\n"
    "overland-guest: workload boot=1 seq=2 synced\r\n"
    "[   12.0] random kernel line: overland-guest: workload boot=1 seq=9 synced\r\n"
    "overland-guest: workload boot=2 seq=1 synced\r\n"
    "overland-guest: workload boot=1 seq=3 sync"
)


def test_the_console_tells_which_records_were_synced_and_which_addresses_applied() -> None:
    # A line not at the start of a line, or cut short, does not count.
    assert synced_records(CONSOLE) == {1: 2, 2: 1}
    assert applied_addresses(CONSOLE) == {0: ["192.0.2.10/24", "198.51.100.10/24"], 1: ["203.0.113.5/28"]}


def test_the_probe_replies_are_counted_per_target() -> None:
    console = (
        "overland-guest: probe 192.0.2.11 no reply 1\r\n"
        "overland-guest: probe 192.0.2.11 reply 2\r\n"
        "overland-guest: probe 198.51.100.13 reply 2\r\n"
        "[ 3.0] x overland-guest: probe 192.0.2.11 reply 3\r\n"
        "overland-guest: probe 192.0.2.11 reply 4\n"
        "overland-guest: probe 192.0.2.11 reply 5"
    )
    # Not at the start of a line: not the probe's. The last line, cut short, still names its round.
    assert probe_replies(console) == {"192.0.2.11": 3, "198.51.100.13": 1}
    assert probe_replies(CONSOLE) == {}


def test_the_workload_log_parses_and_a_torn_last_line_is_left_out() -> None:
    text = "boot=1 seq=1\nboot=1 seq=2\nboot=2 seq=1\nboot=2 se"
    assert parse_workload_log(text) == [WorkloadRecord(1, 1), WorkloadRecord(1, 2), WorkloadRecord(2, 1)]
    assert parse_workload_log("") == []
    with pytest.raises(ValueError, match="line 2"):
        parse_workload_log("boot=1 seq=1\n\0\0\0\0\nboot=1 seq=3\n")


def test_lost_records_are_the_synced_ones_missing_from_the_disk() -> None:
    records = [WorkloadRecord(1, 1), WorkloadRecord(1, 2), WorkloadRecord(1, 3), WorkloadRecord(2, 2)]
    assert lost_records(records, {1: 3}) == []
    assert lost_records(records, {1: 2, 2: 2}) == [WorkloadRecord(2, 1)]
    assert lost_records([], {1: 1}) == [WorkloadRecord(1, 1)]


@given(st.dictionaries(st.integers(1, 5), st.integers(0, 30)), st.data())
def test_records_written_past_the_last_synced_are_never_lost(
    synced: dict[int, int], data: st.DataObject
) -> None:
    # The disk holds every synced record and possibly some written after (not yet acknowledged).
    records = [
        WorkloadRecord(boot, seq)
        for boot, last in sorted(synced.items())
        for seq in range(1, last + data.draw(st.integers(0, 3)) + 1)
    ]
    assert lost_records(records, synced) == []
    if records:
        dropped = data.draw(st.sampled_from(records))
        expected = [dropped] if dropped.seq <= synced[dropped.boot] else []
        assert lost_records([r for r in records if r != dropped], synced) == expected
