"""Roles on the policy service with real certificates and a real etcd: an admin does everything, a
tenant reaches only its own routing domains (lists, gets, writes, moves, bulk loads and watches), a
host reads and writes nothing, and a refusal names the caller, never another tenant."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from overland.config import TlsFiles
from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.config import ServerConfig
from services.common.etcd_auth import POLICY_USER
from services.common.etcd_process import EtcdProcess
from services.common.identity import Role
from services.policy import PolicyConfig, create_server
from tests.conftest import ETCD_TEST_DEADLINE_SECONDS
from tests.unit.policy.support import PA_1, PA_2, expect_error, record, watch_until
from tools.pki import CertificateAuthority

pytestmark = pytest.mark.etcd
Stub = policy_pb2_grpc.PolicyServiceStub
CONTOSO, FABRIKAM = "Contoso Ltd", "Fabrikam"
VSID_A, VSID_B = 5001, 6001


@dataclass
class Callers:
    admin: Stub
    contoso: Stub
    fabrikam: Stub
    host: Stub
    nobody: Stub


@pytest.fixture
def callers(tmp_path: Path, etcd_server: EtcdProcess) -> Iterator[Callers]:
    ca = CertificateAuthority.create(tmp_path, "roles test CA", days=1)
    server_files = ca.issue(
        tmp_path, "server", "localhost", dns=["localhost"], ips=["127.0.0.1"], server=True
    )
    config = PolicyConfig(
        server=ServerConfig(
            bind="127.0.0.1:0", tls=TlsFiles(ca=ca.path, cert=server_files.cert, key=server_files.key)
        ),
        etcd=etcd_server.etcd_config(POLICY_USER, timeout=ETCD_TEST_DEADLINE_SECONDS),
    )
    server, port = create_server(config)
    channels: list[grpc.Channel] = []

    def stub(stem: str, identity: tuple[Role, str] | None) -> Stub:
        files = ca.issue(tmp_path, stem, stem, client=True, identity=identity)
        channel = grpc.secure_channel(f"localhost:{port}", files.credentials())
        channels.append(channel)
        return Stub(channel)

    try:
        yield Callers(
            stub("admin", (Role.ADMIN, "ops")),
            stub("contoso", (Role.TENANT, CONTOSO)),
            stub("fabrikam", (Role.TENANT, FABRIKAM)),
            stub("host1", (Role.HOST, "host1")),
            stub("nobody", None),
        )
    finally:
        for channel in channels:
            channel.close()
        server.stop()


def domain_of(stub: Stub, tenant: str, vsid: int) -> str:
    """A tenant's own domain and subnet, made with its own certificate."""
    domain = stub.CreateRoutingDomain(
        policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name=tenant))
    )
    stub.CreateVirtualSubnet(
        policy_pb2.CreateVirtualSubnetRequest(
            virtual_subnet=types_pb2.VirtualSubnet(vsid=vsid, rdid=domain.rdid, ca_prefixes=["192.0.2.0/24"])
        )
    )
    return domain.rdid


def denied(
    call: Callable[[], object], code: grpc.StatusCode, *, names: str = "", never: str = FABRIKAM
) -> None:
    error, _ = expect_error(call, code)
    details = error.details() or ""
    assert names in details, details
    assert never not in details, details


def test_tenants_see_and_change_only_their_own(callers: Callers) -> None:
    admin, contoso, fabrikam = callers.admin, callers.contoso, callers.fabrikam
    for index, pa in enumerate((PA_1, PA_2)):
        admin.CreateProviderAddress(
            policy_pb2.CreateProviderAddressRequest(
                provider_address=types_pb2.ProviderAddress(
                    host_name=f"host{index}", pa_ip=pa, prefix_length=24
                )
            )
        )
    start = admin.GetTableStatus(policy_pb2.GetTableStatusRequest()).revision
    rdid_a = domain_of(contoso, CONTOSO, VSID_A)
    rdid_b = domain_of(fabrikam, FABRIKAM, VSID_B)
    contoso.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(
            lookup_record=record("192.0.2.10", "02:00:00:00:00:0a", vsid=VSID_A)
        )
    )
    fabrikam.CreateLookupRecord(
        policy_pb2.CreateLookupRecordRequest(
            lookup_record=record("192.0.2.20", "02:00:00:00:00:14", vsid=VSID_B)
        )
    )

    # Lists: each tenant its own, the admin and the host everything.
    page = types_pb2.PageRequest(page_size=1)  # one per page: the domain filter spans pages
    for stub, rdids in ((contoso, [rdid_a]), (fabrikam, [rdid_b]), (admin, sorted([rdid_a, rdid_b]))):
        listed = [
            d.rdid for d in stub.ListRoutingDomains(policy_pb2.ListRoutingDomainsRequest()).routing_domains
        ]
        assert sorted(listed) == sorted(rdids)
        first = stub.ListVirtualSubnets(policy_pb2.ListVirtualSubnetsRequest(page=page))
        assert first.virtual_subnets[0].rdid in rdids
        records = stub.ListLookupRecords(policy_pb2.ListLookupRecordsRequest()).lookup_records
        assert sorted(r.rdid for r in records) == sorted(rdids)
    assert len(callers.host.ListLookupRecords(policy_pb2.ListLookupRecordsRequest()).lookup_records) == 2
    assert not contoso.ListLookupRecords(policy_pb2.ListLookupRecordsRequest(vsid=VSID_B)).lookup_records
    assert not contoso.ListLookupRecords(policy_pb2.ListLookupRecordsRequest(rdid=rdid_b)).lookup_records

    # Another tenant's objects do not exist to it: gets, updates, deletes, moves.
    not_found = grpc.StatusCode.NOT_FOUND
    denied(lambda: contoso.GetRoutingDomain(policy_pb2.GetRoutingDomainRequest(rdid=rdid_b)), not_found)
    denied(lambda: contoso.GetVirtualSubnet(policy_pb2.GetVirtualSubnetRequest(vsid=VSID_B)), not_found)
    denied(
        lambda: contoso.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID_B, ca="192.0.2.20")),
        not_found,
    )
    denied(
        lambda: contoso.DeleteLookupRecord(
            policy_pb2.DeleteLookupRecordRequest(vsid=VSID_B, ca="192.0.2.20")
        ),
        not_found,
    )
    denied(lambda: contoso.DeleteVirtualSubnet(policy_pb2.DeleteVirtualSubnetRequest(vsid=VSID_B)), not_found)
    denied(lambda: contoso.DeleteRoutingDomain(policy_pb2.DeleteRoutingDomainRequest(rdid=rdid_b)), not_found)
    denied(
        lambda: contoso.UpdateRoutingDomain(
            policy_pb2.UpdateRoutingDomainRequest(
                routing_domain=types_pb2.RoutingDomain(rdid=rdid_b, tenant_name=CONTOSO)
            )
        ),
        not_found,
    )
    denied(
        lambda: contoso.MoveLookupRecords(
            policy_pb2.MoveLookupRecordsRequest(
                moves=[policy_pb2.RecordMove(vsid=VSID_B, ca="192.0.2.20")], pa=PA_2
            )
        ),
        not_found,
    )
    # A write into its VSID is a write into no subnet; the VSID's number is taken, whose is not said.
    expect_error(
        lambda: contoso.CreateLookupRecord(
            policy_pb2.CreateLookupRecordRequest(
                lookup_record=record("192.0.2.30", "02:00:00:00:00:1e", vsid=VSID_B)
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    denied(
        lambda: contoso.CreateVirtualSubnet(
            policy_pb2.CreateVirtualSubnetRequest(
                virtual_subnet=types_pb2.VirtualSubnet(
                    vsid=VSID_B, rdid=rdid_a, ca_prefixes=["198.51.100.0/24"]
                )
            )
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        never=rdid_b,
    )
    contoso.BulkApplyLookupRecords(
        iter(
            [
                policy_pb2.BulkApplyLookupRecordsRequest(
                    deletes=[types_pb2.LookupRecord(vsid=VSID_B, ca="192.0.2.20")],
                    upserts=[record("192.0.2.11", "02:00:00:00:00:0b", vsid=VSID_A)],
                )
            ]
        )
    )
    # Its delete there deleted nothing (as of a record that does not exist), its own upsert applied.
    contoso.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID_A, ca="192.0.2.11"))
    kept = admin.GetLookupRecord(policy_pb2.GetLookupRecordRequest(vsid=VSID_B, ca="192.0.2.20"))
    assert kept.pa == PA_1

    # Refusals by role name the caller and the method.
    denied(
        lambda: contoso.CreateRoutingDomain(
            policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name="Other"))
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        names=f"tenant {CONTOSO!r}",
    )
    denied(
        lambda: contoso.DeleteProviderAddress(policy_pb2.DeleteProviderAddressRequest(pa_ip=PA_2)),
        grpc.StatusCode.PERMISSION_DENIED,
        names=f"tenant {CONTOSO!r} may not call DeleteProviderAddress",
    )
    denied(
        lambda: callers.host.CreateLookupRecord(
            policy_pb2.CreateLookupRecordRequest(
                lookup_record=record("192.0.2.40", "02:00:00:00:00:28", vsid=VSID_A)
            )
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        names="host 'host1'",
    )
    denied(
        lambda: callers.nobody.ListRoutingDomains(policy_pb2.ListRoutingDomainsRequest()),
        grpc.StatusCode.PERMISSION_DENIED,
        names="CN=nobody",
    )

    # A tenant's watch of the whole table carries the PAs and its own domain only.
    end = admin.GetTableStatus(policy_pb2.GetTableStatusRequest()).revision
    seen = watch_until(contoso, policy_pb2.WatchTableRequest(start_revision=start), end)
    assert seen
    assert all(rdid_b not in event.key for event in seen)
    assert any(rdid_a in event.key for event in seen)
    everything = watch_until(admin, policy_pb2.WatchTableRequest(start_revision=start), end)
    assert any(rdid_b in event.key for event in everything)
    # Asking for another tenant's domain by name yields nothing of it either.
    named = watch_until(contoso, policy_pb2.WatchTableRequest(start_revision=start, rdids=[rdid_b]), end)
    assert all(rdid_b not in event.key for event in named)
