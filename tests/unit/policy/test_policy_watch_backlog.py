"""A WatchTable client that stops reading is bounded: when it reads nothing for the stall time while its
backlog is full, its stream ends with RESOURCE_EXHAUSTED and the revision to resume from, and the SDK's
watch resumes from it by itself, missing and repeating nothing. The store's clock is a manual one."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from overland import ClientConfig, Endpoint, PolicyClient, Service
from overland.defaults import ERROR_DOMAIN, RESUME_REVISION, WATCH_BACKLOG_EXCEEDED
from overland.v1 import policy_pb2, policy_pb2_grpc
from services.common.clock import ManualClock
from services.common.config import ServerConfig
from services.common.memory_kv import MemoryKV
from services.policy import PolicyConfig, PolicyServer, create_server
from tests.unit.policy.support import WatchStarts, write_records

# gRPC's flow control lets a server push this much to a client that does not read (the HTTP/2 window
# without BDP probing, 64 KiB): the writes below are many times more, and the limit is below it.
_NO_BDP = [("grpc.http2.bdp_probe", 0)]
LIMIT = 16 * 1024


STALL_SECONDS = 5.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def memory_kv(clock: ManualClock) -> Iterator[MemoryKV]:
    kv = MemoryKV(progress_interval=0.2, clock=clock)
    try:
        yield kv
    finally:
        kv.close()


@pytest.fixture
def server(memory_kv: MemoryKV) -> Iterator[PolicyServer]:
    config = PolicyConfig(
        server=ServerConfig(bind="127.0.0.1:0"), watch_backlog_bytes=LIMIT, watch_stall_seconds=STALL_SECONDS
    )
    running, _port = create_server(config, kv=memory_kv)
    try:
        yield running
    finally:
        running.stop()


def _error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo in the status")


def test_a_stalled_watcher_is_ended_with_the_revision_it_has_everything_up_to(
    server: PolicyServer, memory_kv: MemoryKV, clock: ManualClock
) -> None:
    start = memory_kv.current_revision()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=_NO_BDP) as channel:
        stalled = policy_pb2_grpc.PolicyServiceStub(channel).WatchTable(
            policy_pb2.WatchTableRequest(start_revision=start), timeout=60
        )
        written = write_records(memory_kv, 5000)
        clock.advance(STALL_SECONDS)
        # Now the client reads: what the transport held, then the end of the stream.
        received: list[int] = []
        error = None
        try:
            for response in stalled:
                received += [event.revision for event in response.events]
        except grpc.RpcError as ended:
            error = ended
    assert error is not None, "the stream did not end"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = _error_info(error)
    assert (info.domain, info.reason) == (ERROR_DOMAIN, WATCH_BACKLOG_EXCEEDED)
    resume = int(info.metadata[RESUME_REVISION])
    # It ended before the client had every write, and says exactly how far the client got.
    assert len(received) < len(written)
    assert resume == (received[-1] if received else start)
    assert f"start_revision={resume}" in (error.details() or "")
    assert server.grpc.stream_slots.in_use == 0


def test_the_sdk_watch_resumes_from_the_status_and_misses_or_repeats_nothing(
    server: PolicyServer, memory_kv: MemoryKV, clock: ManualClock
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=_NO_BDP)
    config = ClientConfig(endpoints={Service.POLICY: Endpoint(f"127.0.0.1:{server.port}")})
    watch_starts = WatchStarts()
    calls = watch_starts.starts
    with PolicyClient(config=config, channel=grpc.intercept_channel(channel, watch_starts)) as client:
        stream = client.watch_table()
        # The first answer of a watch from now is a progress notification: the watch is open.
        assert not next(stream).events
        first = write_records(memory_kv, 1)
        assert [e.revision for e in next(stream).events] == first
        # The client stops reading while the writes go on.
        written = write_records(memory_kv, 2000)
        clock.advance(STALL_SECONDS)
        seen: list[int] = []
        while len(seen) < len(written):
            seen += [event.revision for event in next(stream).events]
        stream.close()
    assert seen == written
    # It was ended at least once and resumed from where it was.
    assert len(calls) >= 2
    assert calls[0] == 0
    assert all(first[0] <= start < written[-1] for start in calls[1:])
