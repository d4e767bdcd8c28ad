"""``overland replica failover start|stop|complete|status``, ``reverse`` and ``history`` against a
small in-memory ReplicaService: the request each sends, warnings on stderr, and the exit code of a
refused transition."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from overland.v1 import replica_pb2, replica_pb2_grpc
from tests.unit.sdk.cli_runner import invoke, invoke_json, serving


class FakeFailover(replica_pb2_grpc.ReplicaServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def StartVmFailover(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.VmFailover:
        self.requests.append(request)
        if request.vm_name == "busy":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this site is failed over (not completed)")
        return replica_pb2.VmFailover(
            vm_name=request.vm_name,
            state=replica_pb2.FAILOVER_STATE_FAILED_OVER,
            recovery_point=request.recovery_point,
            warnings=["forced while the primary answers"] if request.force else [],
        )

    def StopVmFailover(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.VmFailover:
        self.requests.append(request)
        return replica_pb2.VmFailover(vm_name=request.vm_name, state=replica_pb2.FAILOVER_STATE_REPLICA)

    def CompleteVmFailover(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.VmFailover:
        self.requests.append(request)
        return replica_pb2.VmFailover(
            vm_name=request.vm_name, state=replica_pb2.FAILOVER_STATE_FAILOVER_COMPLETE
        )

    def SetVmReplication(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.VmFailover:
        self.requests.append(request)
        return replica_pb2.VmFailover(vm_name=request.vm_name, state=replica_pb2.FAILOVER_STATE_PRIMARY)

    def GetVmFailover(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.VmFailover:
        return replica_pb2.VmFailover(vm_name=request.vm_name, state=replica_pb2.FAILOVER_STATE_REPLICA)

    def ListVmFailoverHistory(self, request: Any, context: grpc.ServicerContext) -> Any:
        event = replica_pb2.FailoverEvent(
            who="ipv4:127.0.0.1:5000",
            operation="unplanned failover",
            from_state=replica_pb2.FAILOVER_STATE_REPLICA,
            to_state=replica_pb2.FAILOVER_STATE_FAILED_OVER,
            recovery_point=7,
        )
        return replica_pb2.ListVmFailoverHistoryResponse(events=[event])


@pytest.fixture
def env() -> Iterator[tuple[FakeFailover, dict[str, str]]]:
    fake = FakeFailover()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    with serving(replica_pb2_grpc.add_ReplicaServiceServicer_to_server, fake) as address:
        yield fake, {"OVERLAND_REPLICA_ENDPOINT": address}


def test_start_sends_the_options_and_prints_warnings(env: tuple[FakeFailover, dict[str, str]]) -> None:
    fake, environ = env
    code, out, err = invoke(
        environ,
        "--json",
        "replica",
        "failover",
        "start",
        "--vm",
        "web",
        "--recovery-point",
        "web@7",
        "--force",
    )
    assert code == 0, err
    assert "warning: forced while the primary answers" in err
    assert '"state": "FAILOVER_STATE_FAILED_OVER"' in out
    request = fake.requests[-1]
    assert (request.vm_name, request.recovery_point, request.force, request.as_test) == (
        "web",
        7,
        True,
        False,
    )
    invoke_json(environ, "replica", "failover", "start", "--vm", "web", "--as-test", "--leave-off")
    assert (fake.requests[-1].as_test, fake.requests[-1].leave_off, fake.requests[-1].recovery_point) == (
        True,
        True,
        0,
    )
    invoke_json(environ, "replica", "failover", "start", "--vm", "web", "--prepare")
    assert fake.requests[-1].prepare


def test_a_refused_transition_exits_6_and_a_bad_point_is_a_usage_error(
    env: tuple[FakeFailover, dict[str, str]],
) -> None:
    _fake, environ = env
    code, _out, err = invoke(environ, "replica", "failover", "start", "--vm", "busy")
    assert code == 6
    assert "FAILED_PRECONDITION" in err
    assert "failed over (not completed)" in err
    code, _out, err = invoke(
        environ, "replica", "failover", "start", "--vm", "web", "--recovery-point", "latest"
    )
    assert code == 2
    assert "--recovery-point" in err


def test_stop_complete_reverse_status_and_history(env: tuple[FakeFailover, dict[str, str]]) -> None:
    fake, environ = env

    def state(*args: str) -> object:
        answer = invoke_json(environ, "replica", *args)
        assert isinstance(answer, dict)
        return answer["state"]

    assert state("failover", "stop", "--vm", "web") == "FAILOVER_STATE_REPLICA"
    assert state("failover", "complete", "--vm", "web") == "FAILOVER_STATE_FAILOVER_COMPLETE"
    assert state("reverse", "--vm", "web") == "FAILOVER_STATE_PRIMARY"
    assert fake.requests[-1].reverse
    assert state("failover", "status", "--vm", "web") == "FAILOVER_STATE_REPLICA"
    events = invoke_json(environ, "replica", "history", "--vm", "web")
    assert isinstance(events, list)
    assert [(e["operation"], e["recovery_point"], e["who"]) for e in events] == [
        ("unplanned failover", 7, "ipv4:127.0.0.1:5000")
    ]
    code, out, err = invoke(environ, "replica", "history", "--vm", "web")
    assert code == 0, err
    assert "unplanned failover" in out
    assert "FAILED_OVER" in out
