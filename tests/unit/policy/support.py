"""Helpers shared by the policy tests: a seeded table and readers of rich gRPC errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.kv import KV, Put
from services.common.schema import key_of, keys, resource_from, wrap

PA_1 = "198.18.0.1"
PA_2 = "198.18.0.2"
VSID = 5001


@dataclass(frozen=True)
class Seeded:
    rdid: str
    vsid: int
    pas: tuple[str, ...]


def violations_of(error: grpc.RpcError) -> dict[str, str]:
    """The BadRequest field violations of a failed call, field -> description."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the status carries no details"
    found: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def expect_error(
    call: Callable[[], object], code: grpc.StatusCode, *fields: str
) -> tuple[grpc.RpcError, dict[str, str]]:
    """Run ``call``, assert it fails with ``code`` and has a violation for each of ``fields``."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    violations = violations_of(error) if fields else {}
    for field in fields:
        assert field in violations, f"no violation for {field}: {violations}"
    return error, violations


TENANT_PREFIXES = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")


def add_tenant(
    stub: policy_pb2_grpc.PolicyServiceStub, vsid: int, name: str, prefixes: tuple[str, ...] = TENANT_PREFIXES
) -> str:
    """A routing domain with one virtual subnet; returns the rdid."""
    domain = stub.CreateRoutingDomain(
        policy_pb2.CreateRoutingDomainRequest(routing_domain=types_pb2.RoutingDomain(tenant_name=name))
    )
    stub.CreateVirtualSubnet(
        policy_pb2.CreateVirtualSubnetRequest(
            virtual_subnet=types_pb2.VirtualSubnet(vsid=vsid, rdid=domain.rdid, ca_prefixes=list(prefixes))
        )
    )
    return domain.rdid


def seed(stub: policy_pb2_grpc.PolicyServiceStub, vsid: int = VSID, prefix: str = "") -> Seeded:
    """A routing domain with one subnet (of ``prefix``, by default of the three tenant /24s), and two
    registered provider addresses."""
    rdid = add_tenant(stub, vsid, "Contoso", (prefix,) if prefix else TENANT_PREFIXES)
    for index, pa in enumerate((PA_1, PA_2)):
        stub.CreateProviderAddress(
            policy_pb2.CreateProviderAddressRequest(
                provider_address=types_pb2.ProviderAddress(
                    host_name=f"host{index}", pa_ip=pa, prefix_length=24
                )
            )
        )
    return Seeded(rdid, vsid, (PA_1, PA_2))


def watch_until(
    stub: policy_pb2_grpc.PolicyServiceStub, request: policy_pb2.WatchTableRequest, end: int
) -> list[types_pb2.TableEvent]:
    """The events of a WatchTable stream until it reports revision ``end``; then it is cancelled."""
    stream = stub.WatchTable(request, timeout=30)
    events: list[types_pb2.TableEvent] = []
    for response in stream:
        events.extend(response.events)
        if response.revision >= end:
            break
    stream.cancel()
    return events


def record(ca: str, mac: str, pa: str = PA_1, vsid: int = VSID, vm: str = "") -> types_pb2.LookupRecord:
    return types_pb2.LookupRecord(ca=ca, vsid=vsid, mac=mac, pa=pa, vm_name=vm)


def mac_of(index: int) -> str:
    return "02:00:" + ":".join(f"{(index >> shift) & 0xFF:02x}" for shift in (24, 16, 8, 0))


def ca_of(index: int) -> str:
    """Distinct tenant CAs from the documentation ranges, each a VM's address in a subnet of all
    three /24s: 3 x 253 of them (.0, .1 and .255 are the network, gateway and broadcast addresses)."""
    bases = ("192.0.2", "198.51.100", "203.0.113")
    return f"{bases[index // 253 % 3]}.{index % 253 + 2}"


def check_invariants(kv: KV) -> int:
    """Scan the whole store and assert the key schema's invariants; returns the number of records."""
    everything = kv.range(keys.ROOT)
    by_key = {kv_.key: kv_ for kv_ in everything.kvs}
    records = 0
    macs_seen: set[tuple[int, str]] = set()
    for key, value in by_key.items():
        parsed = keys.parse_key(key)
        if parsed is None or parsed.kind != keys.KIND_RECORD:
            continue
        records += 1
        stored = resource_from(value, types_pb2.LookupRecord)
        assert (stored.vsid, stored.ca) == (parsed.vsid, parsed.ca), key
        assert keys.pa_key(stored.pa) in by_key, f"{key!r}: PA {stored.pa} is not registered"
        index = by_key.get(keys.vsid_index_key(stored.vsid))
        assert index is not None, f"{key!r}: no VSID index"
        assert index.value.decode() == parsed.rdid, f"{key!r}: VSID index names another domain"
        assert keys.subnet_key(parsed.rdid, parsed.vsid) in by_key, f"{key!r}: no subnet"
        mac = by_key.get(keys.mac_index_key(stored.vsid, stored.mac))
        assert mac is not None, f"{key!r}: no MAC index entry"
        assert mac.value.decode() == stored.ca, f"{key!r}: MAC index names another CA"
        assert (stored.vsid, stored.mac) not in macs_seen, f"MAC {stored.mac} twice in VSID {stored.vsid}"
        macs_seen.add((stored.vsid, stored.mac))
    for key, value in by_key.items():
        parsed = keys.parse_key(key)
        if parsed is not None and parsed.kind == keys.KIND_MAC_INDEX:
            vsid, indexed_mac = parsed.vsid, parsed.mac
            index = by_key.get(keys.vsid_index_key(vsid))
            assert index is not None, f"{key!r}: MAC index of a missing subnet"
            holder = by_key.get(keys.record_key(index.value.decode(), vsid, value.value.decode()))
            assert holder is not None, f"{key!r}: MAC index names a missing record"
            assert resource_from(holder, types_pb2.LookupRecord).mac == indexed_mac, (
                f"{key!r}: stale MAC index"
            )
    return records


def write_records(kv: KV, count: int, *, batch: int = 50, first: int = 0) -> list[int]:
    """``count`` lookup record writes straight to the store (as another policy worker would), numbered
    from ``first``, in transactions of ``batch``; the revision of each write. Records share 250 keys
    (a write may replace an earlier one); each value is about 300 bytes."""
    revisions = []
    for start in range(first, first + count, batch):
        records = [
            wrap(
                types_pb2.LookupRecord(
                    rdid="rd-watch",
                    vsid=5001,
                    ca=f"192.0.2.{n % 250 + 1}",
                    mac=f"02:00:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}",
                    pa="198.18.0.2",
                    vm_name=f"vm-{n}-" + "x" * 200,
                )
            )
            for n in range(start, min(start + batch, first + count))
        ]
        revision = kv.txn([], [Put(key_of(r), r.SerializeToString()) for r in records]).revision
        revisions += [revision] * len(records)
    return revisions


class WatchStarts(grpc.UnaryStreamClientInterceptor):
    """A client interceptor that notes the start revision of every WatchTable call (each resume)."""

    def __init__(self) -> None:
        self.starts: list[int] = []

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        self.starts.append(request.start_revision)
        return continuation(client_call_details, request)
