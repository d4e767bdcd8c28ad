"""Bad input and faults, each with nothing lost: corrupted chunk, unknown VM, unauthorized primary,
full DR disk, network cut mid-delta, DR killed mid-apply, primary killed mid-cycle, and cycles that
resume by themselves when a DR site that was down answers again."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from overland.v1 import replica_pb2, replica_pb2_grpc
from services.replica.config import PRIMARY_HEADER
from tests.integration.replica.conftest import (
    CycleFailed,
    MiB,
    Sites,
    assert_same,
    dir_usage,
    enable_request,
    free_port,
    make_disk,
    primary_stub,
    qemu_io,
    replica_disk,
    replicate_now,
    state_name,
    throttled,
    wait_for,
)

pytestmark = pytest.mark.qemu


class StreamTap(grpc.StreamUnaryClientInterceptor):
    """Sees (and may alter) every delta message the primary sends; records each attempt's header."""

    def __init__(self, alter: Callable[[int, replica_pb2.DeltaMessage], None] | None = None):
        self.alter = alter
        self.headers: list[replica_pb2.DeltaHeader] = []

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        attempt = len(self.headers)

        def tapped() -> Iterator[Any]:
            for sent in request_iterator:
                # Chunk messages come serialized already (``wire.encode_message``).
                message = replica_pb2.DeltaMessage.FromString(sent) if isinstance(sent, bytes) else sent
                if message.WhichOneof("body") == "header":
                    self.headers.append(message.header)
                elif self.alter is not None:
                    self.alter(attempt, message)
                yield message

        return continuation(client_call_details, tapped())


def tapped_factory(tap: StreamTap) -> Callable[[str], grpc.Channel]:
    return lambda endpoint: grpc.intercept_channel(grpc.insecure_channel(endpoint), tap)


def get(stub: replica_pb2_grpc.ReplicaServiceStub, vm: str) -> Callable[[], replica_pb2.Replication]:
    return lambda: stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name=vm))


def enable_and_wait(
    stub: replica_pb2_grpc.ReplicaServiceStub, vm: str, disk: Path, endpoint: str, **settings: object
) -> replica_pb2.Replication:
    stub.EnableReplication(enable_request(vm, {"d0": disk}, endpoint, **settings))
    return wait_for(get(stub, vm), lambda r: state_name(r) == "REPLICATING")


def test_corrupted_chunk_is_rejected_then_resent(sites: Sites, caplog: pytest.LogCaptureFixture) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB)
    qemu_io(str(disk), "write -P 0x33 0 6M")

    def corrupt(attempt: int, message: replica_pb2.DeltaMessage) -> None:
        # Chunk 2 travels alone or in a batch (compressed, the pattern's chunks share one message).
        for chunk in [message.chunk] if message.HasField("chunk") else message.chunks.chunks:
            if attempt == 0 and chunk.index == 2:
                chunk.data = b"\xff" + chunk.data[1:]

    tap = StreamTap(corrupt)
    primary = sites.primary()
    assert primary.manager is not None
    primary.manager._channel_factory = tapped_factory(tap)
    stub = primary_stub(primary.port)
    enable_and_wait(stub, "vm1", disk, sites.dr.endpoint)
    # Attempt 1 was refused with DATA_LOSS at chunk 2; attempt 2 resumed there, after the staged chunks.
    assert [h.resume_from for h in tap.headers] == [0, 2]
    assert "corrupted chunk rejected vm=vm1 chunk=2" in (sites.base / "dr.log").read_text()
    assert [getattr(r, "code", "") for r in caplog.records if "resuming" in r.getMessage()] == ["DATA_LOSS"]
    assert_same(disk, replica_disk(sites, "vm1", "d0"))


def raw_delta(endpoint: str, primary: str, messages: list[replica_pb2.DeltaMessage]) -> replica_pb2.DeltaAck:
    stub = replica_pb2_grpc.ReplicaReceiverServiceStub(grpc.insecure_channel(endpoint))
    return stub.SendDelta(iter(messages), timeout=10, metadata=((PRIMARY_HEADER, primary),))


def header(vm: str, seq: int, full: bool = False) -> replica_pb2.DeltaMessage:
    return replica_pb2.DeltaMessage(
        header=replica_pb2.DeltaHeader(vm_name=vm, sequence=seq, disk_sizes={"d0": MiB}, full=full)
    )


def test_unknown_vm_duplicate_and_out_of_order_deltas(sites: Sites) -> None:
    end = replica_pb2.DeltaMessage(end_of_delta=0)
    with pytest.raises(grpc.RpcError) as info:
        raw_delta(sites.dr.endpoint, "primary", [header("ghost", 1), end])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no replica of VM 'ghost'" in (info.value.details() or "")
    assert raw_delta(sites.dr.endpoint, "primary", [header("vm9", 1, full=True), end]).sequence == 1
    with pytest.raises(grpc.RpcError) as info:
        raw_delta(sites.dr.endpoint, "primary", [header("vm9", 1), end])
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as info:
        raw_delta(sites.dr.endpoint, "primary", [header("vm9", 5), end])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "next expected sequence is 2" in (info.value.details() or "")


def test_unauthorized_primary_is_refused(sites: Sites) -> None:
    with pytest.raises(grpc.RpcError) as info:
        raw_delta(sites.dr.endpoint, "mallory", [header("vm1", 1, full=True)])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'mallory'" in (info.value.details() or "")
    # Refused, and told nothing of who is allowed.
    assert "'primary'" not in (info.value.details() or "")
    disk = make_disk(sites.base / "d0.vhd", MiB)
    primary = sites.primary(site_name="mallory")
    stub = primary_stub(primary.port)
    # Enable tests the connection first: refused at once, and nothing is enabled.
    with pytest.raises(grpc.RpcError) as info:
        stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint), timeout=30)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not allowed to replicate" in (info.value.details() or "")
    assert "authorization" in (info.value.details() or "")
    assert not list(stub.ListReplications(replica_pb2.ListReplicationsRequest(), timeout=10).replications)
    assert not (sites.dr_store / "vm1" / "disks").exists()


def test_full_disk_at_the_dr_site_refuses_an_enable_or_pauses_replication(sites: Sites) -> None:
    sites.dr_store.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(sites.dr_store)], check=True, timeout=10
    )
    try:
        # A VM that does not fit is refused when it is enabled.
        big = make_disk(sites.base / "big.vhd", 16 * MiB)
        qemu_io(str(big), "write -P 0x42 0 12M")
        primary = sites.primary()
        stub = primary_stub(primary.port)
        with pytest.raises(grpc.RpcError) as refused:
            stub.EnableReplication(enable_request("vm0", {"d0": big}, sites.dr.endpoint), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "free space" in (refused.value.details() or "")
        # One that fits, until a delta does not.
        disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
        qemu_io(str(disk), "write -P 0x42 0 1M")
        stub.EnableReplication(enable_request("vm1", {"d0": disk}, sites.dr.endpoint), timeout=30)
        wait_for(get(stub, "vm1"), lambda r: state_name(r) == "REPLICATING")
        before = dir_usage(sites.dr_store)
        assert primary.manager is not None
        primary.manager.device("vm1", "d0").write(2 * MiB, bytes(range(256)) * (40 * 1024))
        stub.ReplicateNow(replica_pb2.ReplicateNowRequest(vm_name="vm1"), timeout=10)
        paused = wait_for(get(stub, "vm1"), lambda r: state_name(r) == "SUSPENDED")
        assert paused.health == replica_pb2.REPLICATION_HEALTH_WARNING
        assert any("storage full" in reason for reason in paused.health_reasons), paused.health_reasons
        # The failed staging was discarded: the DR site's space is free again.
        assert dir_usage(sites.dr_store) < before + MiB
        # Paused: ReplicateNow refuses at once.
        with pytest.raises(grpc.RpcError) as info:
            stub.ReplicateNow(replica_pb2.ReplicateNowRequest(vm_name="vm1"), timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        subprocess.run(["umount", "-l", str(sites.dr_store)], check=True, timeout=10)


class TcpProxy:
    """A TCP relay that can be cut (every connection closed) and brought back on the same port."""

    def __init__(self, target: int):
        self.target = target
        self.port = free_port()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.relayed = 0

    def start(self) -> TcpProxy:
        self._stop.clear()
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
                self.relayed += len(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_network_cut_mid_delta_resumes(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 16 * MiB)
    qemu_io(str(disk), "write -P 0x61 0 12M")
    proxy = TcpProxy(sites.dr.port).start()
    tap = StreamTap()
    primary = sites.primary()
    assert primary.manager is not None
    primary.manager._channel_factory = tapped_factory(tap)
    stub = primary_stub(primary.port)
    # 4 MiB/s: the 12 MiB initial replica takes about 3 s, long enough to cut it in the middle.
    stub.EnableReplication(
        enable_request("vm1", {"d0": disk}, f"127.0.0.1:{proxy.port}", **throttled(4 * MiB))
    )
    try:
        wait_for(get(stub, "vm1"), lambda r: r.statistics.transferred_bytes >= 4 * MiB, seconds=30)
        proxy.cut()
        time.sleep(1.0)
        proxy.start()
        done = wait_for(get(stub, "vm1"), lambda r: state_name(r) == "REPLICATING", seconds=90)
    finally:
        proxy.cut()
    assert done.last_sequence == 1
    assert len(tap.headers) >= 2
    assert tap.headers[-1].resume_from > 0, [h.resume_from for h in tap.headers]
    assert_same(disk, replica_disk(sites, "vm1", "d0"))


def test_replica_lost_at_the_dr_site_triggers_a_new_initial_replication(sites: Sites) -> None:
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB)
    qemu_io(str(disk), "write -P 0x5a 0 3M")
    primary = sites.primary()
    stub = primary_stub(primary.port)
    enable_and_wait(stub, "vm1", disk, sites.dr.endpoint)
    sites.dr.stop()
    shutil.rmtree(sites.dr_store / "vm1")
    sites.dr.start()
    with pytest.raises(CycleFailed) as failed:
        replicate_now(stub, "vm1")
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no replica of VM 'vm1' any more" in failed.value.details()
    assert state_name(get(stub, "vm1")()) == "CRITICAL"
    again = replicate_now(stub, "vm1")
    assert state_name(again) == "REPLICATING"
    assert again.last_sequence == 1
    assert_same(disk, replica_disk(sites, "vm1", "d0"))


def test_cycles_resume_by_themselves_when_the_dr_site_answers_again(sites: Sites) -> None:
    """A cycle fails while the DR site is down; health names the outage while it lasts; once the DR
    site is back, the manager's probes (at the capped backoff, tested in
    tests/unit/replica/test_dr_outage.py) start the next cycle with no one asking and no interval
    passing (the interval is 5 min): the events, in order, not how long they took."""
    disk = make_disk(sites.base / "d0.vhd", 8 * MiB)
    qemu_io(str(disk), "write -P 0x33 0 2M")
    primary = sites.primary()
    assert primary.manager is not None
    stub = primary_stub(primary.port)
    enable_and_wait(stub, "vm1", disk, sites.dr.endpoint, frequency_seconds=300)
    primary.manager.device("vm1", "d0").write(MiB, b"\x44" * MiB)

    sites.dr.stop()
    with pytest.raises(CycleFailed) as failed:
        replicate_now(stub, "vm1")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    failed_id = failed.value.cycle.id
    # While it lasts, health says the DR site does not answer, and that replication will go on.
    out = get(stub, "vm1")()
    assert out.health != replica_pb2.REPLICATION_HEALTH_NORMAL
    (reason,) = [r for r in out.health_reasons if "has not answered" in r]
    assert sites.dr.endpoint in reason
    assert "goes on as soon as it answers" in reason
    assert out.last_sequence == 1

    sites.dr.start()
    # No ReplicateNow from here on: the next cycle is the manager's own, after a probe.
    back = wait_for(
        get(stub, "vm1"),
        lambda r: r.cycle.id > failed_id and r.cycle.state == replica_pb2.CYCLE_STATE_SUCCEEDED,
        seconds=60,
    )
    assert back.last_sequence == 2
    assert back.cycle.sequence == 2
    assert not [r for r in back.health_reasons if "has not answered" in r]
    # Out of error; the failed cycle still counts as a missed one (Hyper-V's 20% rule), nothing else.
    assert state_name(back) == "REPLICATING"
    assert list(back.health_reasons) == ["1 of 3 cycles missed (over 20%)"]
    assert_same(disk, replica_disk(sites, "vm1", "d0"))
