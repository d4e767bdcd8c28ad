"""``overland replica`` against a small in-memory ReplicaService on a real gRPC server: the request each
command sends, the output, and the exit code of an unknown VM."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.core import TyperGroup

from overland.cli.replica import app as replica_app
from overland.v1 import replica_pb2, replica_pb2_grpc
from tests.unit.sdk.cli_runner import invoke, invoke_json, serving

STATES = replica_pb2.ReplicationState
MiB = 1024 * 1024


class FakeReplica(replica_pb2_grpc.ReplicaServiceServicer):
    def __init__(self) -> None:
        self.replications: dict[str, replica_pb2.Replication] = {}
        self.next_cycle = 0
        self.sets: list[replica_pb2.SetReplicationRequest] = []

    def _get(self, name: str, context: grpc.ServicerContext) -> replica_pb2.Replication:
        if name not in self.replications:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no replication for VM {name}")
        return self.replications[name]

    def _set_state(self, name: str, state: int, context: grpc.ServicerContext) -> replica_pb2.Replication:
        replication = self._get(name, context)
        replication.state = state  # type: ignore[assignment]
        return replication

    def EnableReplication(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.Replication:
        replication = replica_pb2.Replication(
            vm=request.vm,
            settings=request.settings,
            state=STATES.REPLICATION_STATE_INITIAL_REPLICATION_IN_PROGRESS,
            statistics=replica_pb2.ReplicationStatistics(progress=0.25),
        )
        self.replications[request.vm.name] = replication
        return replication

    def GetReplication(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.Replication:
        return self._get(request.vm_name, context)

    def ListReplications(self, request: Any, context: grpc.ServicerContext) -> Any:
        return replica_pb2.ListReplicationsResponse(replications=list(self.replications.values()))

    def PauseReplication(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.Replication:
        return self._set_state(request.vm_name, STATES.REPLICATION_STATE_SUSPENDED, context)

    def ResumeReplication(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.Replication:
        return self._set_state(request.vm_name, STATES.REPLICATION_STATE_REPLICATING, context)

    def ResyncReplication(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.Replication:
        return self._set_state(request.vm_name, STATES.REPLICATION_STATE_RESYNCHRONIZING, context)

    def ReplicateNow(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.Cycle:
        self._get(request.vm_name, context)
        self.next_cycle += 1
        return replica_pb2.Cycle(
            vm_name=request.vm_name, id=self.next_cycle, state=replica_pb2.CYCLE_STATE_QUEUED, requested=True
        )

    def WatchCycle(self, request: Any, context: grpc.ServicerContext) -> Iterator[replica_pb2.Cycle]:
        self._get(request.vm_name, context)
        cycle = replica_pb2.Cycle(
            vm_name=request.vm_name,
            id=request.id,
            kind=replica_pb2.CYCLE_KIND_DELTA,
            state=replica_pb2.CYCLE_STATE_RUNNING,
            total_bytes=4 * MiB,
            start_time_unix_nanos=1,
        )
        for sent in (0, MiB, 3 * MiB):
            cycle.transferred_bytes = sent
            yield cycle
        cycle.transferred_bytes = 4 * MiB
        cycle.end_time_unix_nanos = 1 + 500_000_000
        if request.vm_name == "broken":
            cycle.state = replica_pb2.CYCLE_STATE_FAILED
            cycle.error_code = "FAILED_PRECONDITION"
            cycle.error = "the DR site has no replica of VM 'broken' any more"
        else:
            cycle.state = replica_pb2.CYCLE_STATE_SUCCEEDED
            cycle.sequence = 7
        yield cycle

    def SetReplication(self, request: Any, context: grpc.ServicerContext) -> replica_pb2.Replication:
        replication = self._get(request.vm_name, context)
        self.sets.append(request)
        for name in request.fields:
            setattr(replication.settings, name, getattr(request.settings, name))
        return replication

    def TestReplicationConnection(
        self, request: Any, context: grpc.ServicerContext
    ) -> replica_pb2.ConnectionTest:
        reachable = request.replica_server != "198.18.0.9:50053"
        passed, failed, skipped = (
            replica_pb2.CHECK_RESULT_PASSED,
            replica_pb2.CHECK_RESULT_FAILED,
            replica_pb2.CHECK_RESULT_SKIPPED,
        )
        checks = [
            replica_pb2.ConnectionCheck(
                name="reachability",
                result=passed if reachable else failed,
                message="accepts connections" if reachable else "cannot connect: Connection refused",
                error_code="" if reachable else "UNAVAILABLE",
            ),
            *(
                replica_pb2.ConnectionCheck(name=name, result=passed if reachable else skipped, message="ok")
                for name in ("tls", "authorization", "free_space")
            ),
        ]
        return replica_pb2.ConnectionTest(replica_server=request.replica_server, ok=reachable, checks=checks)

    def ListRecoveryPoints(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._get(request.vm_name, context)
        point = replica_pb2.RecoveryPoint(id="rp-1", vm_name=request.vm_name, sequence=3)
        return replica_pb2.ListRecoveryPointsResponse(recovery_points=[point])


@pytest.fixture
def env() -> Iterator[tuple[FakeReplica, dict[str, str]]]:
    fake = FakeReplica()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    with serving(replica_pb2_grpc.add_ReplicaServiceServicer_to_server, fake) as address:
        yield fake, {"OVERLAND_REPLICA_ENDPOINT": address}


def test_enable_sends_the_vm_disks_and_settings(env: tuple[FakeReplica, dict[str, str]]) -> None:
    fake, environ = env
    enabled = invoke_json(
        environ,
        "replica",
        "enable",
        "--vm",
        "web",
        "--disk",
        "os=/var/lib/vm/web.vhd",
        "--replica-server",
        "198.18.0.2:50053",
        "--frequency",
        "30",
        "--initial-method",
        "existing-copy",
        "--no-compression",
    )
    assert isinstance(enabled, dict)
    sent = fake.replications["web"]
    assert [(d.name, d.path, d.format) for d in sent.vm.disks] == [
        ("os", "/var/lib/vm/web.vhd", replica_pb2.DISK_FORMAT_VHD)
    ]
    assert sent.settings.frequency_seconds == 30
    assert sent.settings.compression_mode == replica_pb2.COMPRESSION_OFF
    assert sent.settings.initial_method == replica_pb2.INITIAL_REPLICATION_METHOD_EXISTING_COPY
    code, _, err = invoke(
        environ, "replica", "enable", "--vm", "x", "--disk", "nopath", "--replica-server", "h:1"
    )
    assert code == 2
    assert "NAME=PATH" in err


def test_enable_format_raw_is_sent_for_every_disk(env: tuple[FakeReplica, dict[str, str]]) -> None:
    fake, environ = env
    args = [
        "replica",
        "enable",
        "--vm",
        "db",
        "--disk",
        "a=/a.img",
        "--disk",
        "b=/b.img",
        "--replica-server",
        "h:1",
    ]
    invoke_json(environ, *args, "--format", "raw")
    assert [d.format for d in fake.replications["db"].vm.disks] == [replica_pb2.DISK_FORMAT_RAW] * 2
    code, _, err = invoke(environ, *args, "--format", "qcow2")
    assert code == 2
    assert "'qcow2' is not one of 'vhd', 'raw'" in err


def test_pause_resume_resync_status_and_recovery_points(env: tuple[FakeReplica, dict[str, str]]) -> None:
    _, environ = env
    invoke_json(environ, "replica", "enable", "--vm", "web", "--disk", "os=/d.vhd", "--replica-server", "h:1")
    for command, state in (
        ("pause", "REPLICATION_STATE_SUSPENDED"),
        ("resume", "REPLICATION_STATE_REPLICATING"),
        ("resync", "REPLICATION_STATE_RESYNCHRONIZING"),
    ):
        result = invoke_json(environ, "replica", command, "--vm", "web")
        assert isinstance(result, dict)
        assert result["state"] == state
    listed = invoke_json(environ, "replica", "status")
    assert isinstance(listed, list)
    assert [r["vm"]["name"] for r in listed] == ["web"]
    points = invoke_json(environ, "replica", "recovery-points", "--vm", "web")
    # 64-bit numbers are JSON numbers, not strings.
    assert points == [
        {"id": "rp-1", "vm_name": "web", "sequence": 3, "create_time_unix_nanos": 0, "hourly": False}
    ]
    code, out, _ = invoke(
        environ, "replica", "status", "--vm", "web", "--watch", "--count", "1", "--interval", "0"
    )
    assert code == 0
    assert "web" in out
    assert "resynchronizing" in out
    code, _, err = invoke(environ, "replica", "pause", "--vm", "nope")
    assert code == 4
    assert "nope" in err
    # A bare VM name is not how replica commands take it.
    code, _, err = invoke(environ, "replica", "pause", "web")
    assert code == 2


def test_replicate_now_returns_the_queued_cycle_and_waits_with_progress(
    env: tuple[FakeReplica, dict[str, str]],
) -> None:
    _, environ = env
    for vm in ("web", "broken"):
        invoke_json(
            environ, "replica", "enable", "--vm", vm, "--disk", "os=/d.vhd", "--replica-server", "h:1"
        )
    queued = invoke_json(environ, "replica", "replicate-now", "--vm", "web")
    assert isinstance(queued, dict)
    assert (queued["id"], queued["state"], queued["requested"]) == (1, "CYCLE_STATE_QUEUED", True)
    done = invoke_json(environ, "replica", "replicate-now", "--vm", "web", "--wait")
    assert isinstance(done, dict)
    assert (done["id"], done["state"], done["sequence"]) == (2, "CYCLE_STATE_SUCCEEDED", 7)
    code, out, _ = invoke(environ, "replica", "replicate-now", "--vm", "web", "--wait")
    assert code == 0
    assert "web: cycle 3: delta, 4 MiB in 0.5 s, sequence 7" in out
    # A failed cycle exits with its status code's exit status and says why.
    code, _, err = invoke(environ, "replica", "replicate-now", "--vm", "broken", "--wait")
    assert code == 6
    assert "no replica of VM 'broken' any more" in err


SETTABLE = {
    "--frequency": ("frequency_seconds", st.sampled_from([30, 300, 900, 45])),
    "--recovery-points": ("additional_recovery_points", st.integers(0, 30)),
    "--bandwidth-limit": ("bandwidth_limit_bytes_per_second", st.integers(0, 2**64 - 1)),
    "--replica-server": ("replica_server", st.sampled_from(["198.18.0.2:50053", "dr.example:1"])),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(st.sampled_from(sorted(SETTABLE)), st.none(), max_size=4).flatmap(
        lambda chosen: st.fixed_dictionaries({flag: SETTABLE[flag][1] for flag in chosen})
    ),
    st.sampled_from([None, "auto", "zstd", "off"]),
    st.booleans(),
)
def test_set_sends_exactly_the_settings_given(
    env: tuple[FakeReplica, dict[str, str]], values: dict[str, Any], compression: str | None, resync: bool
) -> None:
    fake, environ = env
    fake.replications.setdefault("web", replica_pb2.Replication(vm=replica_pb2.VirtualMachine(name="web")))
    args = [arg for flag, value in values.items() for arg in (flag, str(value))]
    if compression is not None:
        args += ["--compression", compression]
    if resync:
        args.append("--resync")
    before = len(fake.sets)
    code, _, err = invoke(environ, "--json", "replica", "set", "--vm", "web", *args)
    expected = {SETTABLE[flag][0]: value for flag, value in values.items()}
    if compression is not None:
        expected["compression_mode"] = replica_pb2.Compression.Value(f"COMPRESSION_{compression.upper()}")
    if not expected:
        # Nothing to change is a usage error, and no call.
        assert code == 2, err
        assert len(fake.sets) == before
        return
    assert code == 0, err
    sent = fake.sets[-1]
    assert sorted(sent.fields) == sorted(expected)
    assert {name: getattr(sent.settings, name) for name in sent.fields} == expected
    assert sent.resync == resync


def test_test_connection_prints_each_check_and_exits_with_the_first_failure(
    env: tuple[FakeReplica, dict[str, str]],
) -> None:
    _, environ = env
    tested = invoke_json(environ, "replica", "test-connection", "--replica-server", "198.18.0.2:50053")
    assert isinstance(tested, dict)
    assert tested["ok"] is True
    assert [c["name"] for c in tested["checks"]] == ["reachability", "tls", "authorization", "free_space"]
    code, out, _ = invoke(environ, "replica", "test-connection", "--replica-server", "198.18.0.9:50053")
    assert code == 7
    assert "reachability" in out
    assert "failed" in out
    assert "skipped" in out
    assert "Connection refused" in out


def _replica_commands() -> Iterator[tuple[str, Any]]:
    """Every command under ``overland replica`` (nested groups such as ``failover`` included)."""

    def walk(group: TyperGroup, path: str) -> Iterator[tuple[str, Any]]:
        context = type(group).context_class(group, info_name=path)
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            if isinstance(command, TyperGroup):
                yield from walk(command, f"{path} {name}")
            else:
                yield f"{path} {name}", command

    root = typer.main.get_command(replica_app)
    assert isinstance(root, TyperGroup)
    yield from walk(root, "replica")


def test_every_replica_command_names_its_vm_with_the_vm_option() -> None:
    commands = dict(_replica_commands())
    # The failover commands (issue 11) and the operator's (issue 12) are all there.
    assert {"replica failover start", "replica set", "replica export-recovery-point"} <= set(commands)
    takes_vm = set()
    for path, command in commands.items():
        for param in command.params:
            names = {param.name, *param.opts}
            if names & {"vm", "vm_name", "name", "--vm", "--vm-name", "--name"}:
                # Always the option --vm, never a bare argument or another spelling.
                assert param.param_type_name == "option", path
                assert param.opts == ["--vm"], (path, param.opts)
                takes_vm.add(path)
    # Only the commands with no VM of their own go without it.
    assert set(commands) - takes_vm == {"replica import"}
