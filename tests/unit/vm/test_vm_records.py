"""What a site keeps of its VMs: the VM record and the qemu run record read back as written, a damaged
file is a typed error naming it, and /proc/PID/stat is read right whatever the command's name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.errors import ReplicaStateCorrupted
from services.replica.vm import (
    NetworkSettings,
    ProcessIdentity,
    RunRecord,
    VmRecord,
    identity_of,
    parse_stat,
)
from services.replica.vm.records import RECORD_FILE, RUN_FILE

TEXT = st.text(max_size=40)

records = st.builds(
    VmRecord,
    id=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    config=st.builds(
        replica_pb2.VirtualMachine,
        name=TEXT,
        cpu_count=st.integers(0, 64),
        disks=st.lists(st.builds(replica_pb2.VmDisk, name=TEXT, path=TEXT), max_size=3),
    ),
    created_nanos=st.integers(0, 2**63 - 1),
    network=st.sampled_from(list(NetworkSettings)),
    replica=st.booleans(),
    locked_reason=TEXT,
    last_stop=TEXT,
)
runs = st.builds(
    RunRecord,
    identity=st.builds(ProcessIdentity, st.integers(1, 2**22), st.integers(0, 2**63 - 1)),
    started_nanos=st.integers(0, 2**63 - 1),
    accel=st.sampled_from(["kvm", "tcg"]),
    append=TEXT,
)


@given(records)
def test_a_vm_record_reads_back_as_written(record: VmRecord) -> None:
    assert VmRecord.decode(record.encode(), Path(RECORD_FILE)) == record


@given(runs)
def test_a_run_record_reads_back_as_written(run: RunRecord) -> None:
    assert RunRecord.decode(run.encode(), Path(RUN_FILE)) == run


@pytest.mark.parametrize("data", [b"", b"[]", b"{", b'{"id": "x"}', b'{"pid": "one"}'])
def test_a_damaged_record_is_a_typed_error_naming_the_file(data: bytes) -> None:
    for decode in (VmRecord.decode, RunRecord.decode):
        with pytest.raises(ReplicaStateCorrupted, match="vm-folder"):
            decode(data, Path("vm-folder") / "file.json")


def test_saving_replaces_the_file_whole(tmp_path: Path) -> None:
    record = VmRecord("0" * 32, replica_pb2.VirtualMachine(name="vm1"), 1)
    record.save(tmp_path)
    record.last_stop = "shut down"
    record.save(tmp_path)
    assert VmRecord.decode((tmp_path / RECORD_FILE).read_bytes(), tmp_path).last_stop == "shut down"
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]


@given(st.text(alphabet=st.characters(exclude_characters="\x00\n"), max_size=16), st.sampled_from("RSDZ"))
def test_stat_is_read_whatever_the_command_name_holds(name: str, state: str) -> None:
    # Fields 3 to 22 (proc(5)); the name may hold blanks and parentheses: only the last ")" ends it.
    line = f"4242 ({name}) {state} 1 4242 4242 0 -1 4194560 " + " ".join(["7"] * 12) + " 987654 123 456\n"
    assert parse_stat(line) == (state, 987654)


def test_this_process_has_an_identity_and_a_reused_id_is_not_it() -> None:
    me = identity_of(os.getpid())
    assert me is not None
    assert me == identity_of(os.getpid())
    assert me != ProcessIdentity(me.pid, me.start_ticks + 1)
    assert identity_of(2**22 + 1) is None
