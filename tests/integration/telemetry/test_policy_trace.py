"""One trace from a policy write to the hosts that applied it: a real policy service on a real etcd and two
table-only vswitch agents, all exporting over OTLP/gRPC to the in-process receiver."""

from __future__ import annotations

import grpc
import pytest

from overland.defaults import POLICY, VSWITCH
from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.config import ServerConfig, TelemetryConfig
from services.common.etcd_auth import POLICY_USER, host_user
from services.common.etcd_process import EtcdProcess
from services.policy import PolicyConfig, create_server
from services.vswitch.config import AgentConfig, BackoffPolicy
from services.vswitch.server import create_server as create_agent
from services.vswitch.telemetry import APPLIED_REVISION, APPLY_SPAN, LAG_REVISIONS, LAG_SECONDS
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.unit.policy.support import PA_2, seed

pytestmark = pytest.mark.etcd

HOSTS = ("host-a", "host-b")


def _agent_config(host: str, pa: str, etcd: EtcdProcess, endpoint: str) -> AgentConfig:
    return AgentConfig(
        host_name=host,
        pa_ip=pa,
        etcd=etcd.etcd_config(host_user(host), timeout=ETCD_TEST_DEADLINE_SECONDS),
        server=ServerConfig(bind="127.0.0.1:0"),
        table_only=True,
        lease_ttl=4,
        backoff=BackoffPolicy(initial_seconds=0.05, cap_seconds=0.5),
        telemetry=TelemetryConfig(VSWITCH.otel_name, service_instance=host, otlp_endpoint=endpoint),
    )


def test_a_policy_write_and_both_appliers_share_one_trace(
    etcd_server: EtcdProcess, receiver: OtlpReceiver
) -> None:
    policy, port = create_server(
        PolicyConfig(
            server=ServerConfig(bind="127.0.0.1:0"),
            etcd=etcd_server.etcd_config(POLICY_USER, timeout=ETCD_TEST_DEADLINE_SECONDS),
            telemetry=TelemetryConfig(POLICY.otel_name, otlp_endpoint=receiver.endpoint),
        )
    )
    agents = [
        create_agent(_agent_config(host, f"198.18.0.{i + 1}", etcd_server, receiver.endpoint))[0]
        for i, host in enumerate(HOSTS)
    ]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            seed(stub)
            seeded = stub.GetProviderAddress(policy_pb2.GetProviderAddressRequest(pa_ip=PA_2), timeout=10)
            # The seeding writes are applied first, so that the record's write is a batch of its own.
            for agent in agents:
                assert agent.agent.wait_for_revision(seeded.revision, timeout=20)
            created = stub.CreateLookupRecord(
                policy_pb2.CreateLookupRecordRequest(
                    lookup_record=types_pb2.LookupRecord(
                        vsid=5001, ca="192.0.2.10", pa="198.18.0.1", mac="02:00:00:00:00:0a"
                    )
                ),
                timeout=10,
            )
        for agent in agents:
            assert agent.agent.wait_for_revision(created.revision, timeout=20)
    finally:
        for agent in agents:
            agent.stop()
        policy.stop()

    def complete(spans: list[ReceivedSpan]) -> bool:
        writes = [s for s in spans if s.name.endswith("/CreateLookupRecord")]
        if not writes:
            return False
        hosts = {s.attributes.get("overland.host") for s in spans if s.trace_id == writes[0].trace_id}
        return hosts >= set(HOSTS)

    spans = receiver.wait_for(complete)
    (write,) = [s for s in spans if s.name.endswith("/CreateLookupRecord")]
    assert write.service == POLICY.otel_name
    assert write.parent_span_id == ""
    applies = [s for s in spans if s.name == APPLY_SPAN and s.trace_id == write.trace_id]
    assert {s.service for s in applies} == {VSWITCH.otel_name}
    assert sorted(s.attributes["overland.host"] for s in applies) == sorted(HOSTS)
    for apply in applies:
        # One record, one write: the apply is a child of the policy server's span.
        assert apply.parent_span_id == write.span_id
        assert apply.attributes["overland.revision"] == created.revision
        assert apply.attributes["overland.events"] >= 1
    # The seeding writes (domain, subnet, two provider addresses) made traces of their own; an apply
    # that batched several of them is a root span linked to each.
    seeding = {s.trace_id for s in spans if "/Create" in s.name} - {write.trace_id}
    assert len(seeding) == 4
    batched = [s for s in spans if s.name == APPLY_SPAN and len(s.links) > 1]
    for apply in batched:
        assert apply.parent_span_id == ""
        assert {trace_id for trace_id, _span in apply.links} <= seeding
        assert apply.attributes["overland.causes"] == len(apply.links)
    # The agents' metrics went to the same collector (exported at the latest when they stopped).
    assert {LAG_SECONDS, LAG_REVISIONS, APPLIED_REVISION} <= receiver.metrics.names(VSWITCH.otel_name)
