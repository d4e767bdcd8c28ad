"""Set-VMReplication's rules (which settings change, what a move to another replica server needs) and
Test-VMReplicationConnection's checks, with a real listening socket and a DR site's answers faked."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.errors import InvalidReplicationSettings, InvalidTransition
from services.replica.primary.changes import CHANGEABLE, Move, changed_settings, plan_move
from services.replica.primary.connection import check_connection, refusal
from tests.unit.replica.test_dr_outage import Failure

CURRENT = replica_pb2.ReplicationSettings(
    frequency_seconds=300,
    additional_recovery_points=2,
    compression_mode=replica_pb2.COMPRESSION_AUTO,
    bandwidth_limit_bytes_per_second=0,
    replica_server="198.18.0.2:50053",
    initial_method=replica_pb2.INITIAL_REPLICATION_METHOD_NETWORK,
)
NEW = replica_pb2.ReplicationSettings(
    frequency_seconds=30,
    additional_recovery_points=5,
    compression_mode=replica_pb2.COMPRESSION_OFF,
    bandwidth_limit_bytes_per_second=1 << 20,
    replica_server="198.18.0.3:50053",
    initial_method=replica_pb2.INITIAL_REPLICATION_METHOD_EXTERNAL_MEDIA,
    export_path="/media/x",
)


@given(st.sets(st.sampled_from(CHANGEABLE), min_size=1))
def test_only_the_fields_named_change(fields: set[str]) -> None:
    result = changed_settings(CURRENT, NEW, sorted(fields))
    for name in CHANGEABLE:
        assert getattr(result, name) == getattr(NEW if name in fields else CURRENT, name)
    # The initial method is not for Set-VMReplication to change.
    assert (result.initial_method, result.export_path) == (CURRENT.initial_method, CURRENT.export_path)


@pytest.mark.parametrize(
    ("fields", "words"),
    [([], "name the settings to change"), (["initial_method"], "cannot change"), (["colour"], "unknown")],
)
def test_a_field_that_cannot_change_is_refused(fields: list[str], words: str) -> None:
    with pytest.raises(InvalidReplicationSettings, match=words):
        changed_settings(CURRENT, NEW, [*fields, "frequency_seconds"] if fields else fields)


@given(st.integers(0, 100), st.integers(0, 100), st.booleans(), st.booleans())
def test_a_move_needs_the_same_sequence_or_a_resync(
    ours: int, theirs: int, initial_done: bool, resync: bool
) -> None:
    def plan() -> Move:
        return plan_move(
            "vm1", "dr2:50053", ours=ours, theirs=theirs, initial_done=initial_done, resync=resync
        )

    if theirs == ours:
        assert plan() is Move.DELTAS
    elif not resync:
        with pytest.raises(InvalidTransition, match="--resync"):
            plan()
    else:
        assert plan() is (Move.RESYNC if theirs and initial_done else Move.INITIAL)


@pytest.fixture
def listening() -> Iterator[str]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


def dr_answer(free: int = 10 << 30, replica: int = 0) -> replica_pb2.ReplicaServerCheck:
    return replica_pb2.ReplicaServerCheck(
        site_name="dr", primary="site-a", free_bytes=free, total_bytes=100 << 30, replica_bytes=replica
    )


def results(test: replica_pb2.ConnectionTest) -> dict[str, str]:
    return {c.name: replica_pb2.CheckResult.Name(c.result).removeprefix("CHECK_RESULT_") for c in test.checks}


def test_every_check_passes_and_the_room_is_the_vm_s_less_its_replica(listening: str) -> None:
    tested = check_connection(listening, None, lambda: dr_answer(replica=1 << 20), 5 << 20)
    assert tested.ok
    assert results(tested) == dict.fromkeys(("reachability", "tls", "authorization", "free_space"), "PASSED")
    assert (tested.dr_site_name, tested.known_as, tested.needed_bytes) == ("dr", "site-a", 4 << 20)
    assert "plaintext" in tested.checks[1].message
    assert "the VM needs about 4 MiB" in tested.checks[3].message


def test_each_failure_has_its_own_check_message_and_code(listening: str) -> None:
    def refused() -> replica_pb2.ReplicaServerCheck:
        raise Failure(grpc.StatusCode.PERMISSION_DENIED, "primary 'site-a' is not allowed to replicate")

    def tls_server() -> replica_pb2.ReplicaServerCheck:
        raise Failure(grpc.StatusCode.UNAVAILABLE, "Socket closed")

    def no_receiver() -> replica_pb2.ReplicaServerCheck:
        raise Failure(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    # Each case: the check that fails, its code, its words, and what EnableReplication raises for it.
    for ask, check, code, words, refused_with in (
        (refused, "authorization", "PERMISSION_DENIED", "not allowed", "PERMISSION_DENIED"),
        (tls_server, "tls", "UNAVAILABLE", "wants TLS", "FAILED_PRECONDITION"),
        (no_receiver, "authorization", "FAILED_PRECONDITION", "without an allow-list", "FAILED_PRECONDITION"),
        (
            lambda: dr_answer(free=1 << 20),
            "free_space",
            "RESOURCE_EXHAUSTED",
            "free space there",
            "RESOURCE_EXHAUSTED",
        ),
    ):
        tested = check_connection(listening, None, ask, 5 << 20)
        assert not tested.ok
        (failed,) = [c for c in tested.checks if c.result == replica_pb2.CHECK_RESULT_FAILED]
        assert (failed.name, failed.error_code) == (check, code)
        assert words in failed.message
        error = refusal("vm1", tested)
        assert error.code.name == refused_with
        assert check.replace("_", " ") in error.message


def test_an_unreachable_site_skips_the_rest(listening: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{probe.getsockname()[1]}"
    tested = check_connection(nobody, None, dr_answer, None)
    assert results(tested) == {
        "reachability": "FAILED",
        "tls": "SKIPPED",
        "authorization": "SKIPPED",
        "free_space": "SKIPPED",
    }
    assert "external-media" in refusal("vm1", tested).message
