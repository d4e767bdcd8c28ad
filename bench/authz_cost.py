"""What authorization costs per call: unary calls of the policy service over plaintext, over mutual
TLS without roles, and over mutual TLS with roles (as an admin, and as a tenant whose call the tenant
filter checks), side by side in the same run, against one MemoryKV.

Each variant is its own server in this process; their rounds alternate, so drift hits all alike.

``python -m bench.authz_cost [--calls N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from overland.config import TlsFiles
from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2
from services.common.access import Authorization
from services.common.config import ServerConfig
from services.common.identity import Role
from services.common.memory_kv import MemoryKV
from services.common.server import GrpcServer, build_server
from services.policy.access import RULES
from services.policy.service import GRPC_SERVICE, PolicyServicer
from services.policy.store import PolicyStore
from tools.pki import CertificateAuthority

TENANT = "Contoso"


def _serve(store: PolicyStore, config: ServerConfig, roles: bool) -> GrpcServer:
    """``roles`` False: every caller is an admin without its certificate being read or any rule
    looked up (what a server that verifies no client certificates does)."""
    servicer = PolicyServicer(store)
    return build_server(
        config,
        [GRPC_SERVICE],
        lambda server: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server),
        authorization=Authorization.of_server(RULES, config) if roles else Authorization(RULES, mutual=False),
    )


def _latencies(call: Callable[[], object], count: int) -> list[float]:
    found = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        found.append(time.perf_counter() - started)
    return found


def _getter(
    stub: policy_pb2_grpc.PolicyServiceStub, request: policy_pb2.GetRoutingDomainRequest
) -> Callable[[], object]:
    def call() -> object:
        return stub.GetRoutingDomain(request, timeout=10)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="overland-authz-bench-"))
    ca = CertificateAuthority.create(directory, "bench CA", days=1)
    served = ca.issue(directory, "server", "localhost", dns=["localhost"], server=True)
    admin = ca.issue(directory, "admin", "admin", client=True, identity=(Role.ADMIN, "ops"))
    tenant = ca.issue(directory, "tenant", "tenant", client=True, identity=(Role.TENANT, TENANT))
    mutual = TlsFiles(ca=ca.path, cert=served.cert, key=served.key)

    kv = MemoryKV()
    store = PolicyStore(kv)
    rdid = store.create_routing_domain(types_pb2.RoutingDomain(tenant_name=TENANT)).rdid
    servers = {
        "plaintext": _serve(store, ServerConfig(bind="127.0.0.1:0"), roles=True),
        "mTLS, no roles": _serve(store, ServerConfig(bind="127.0.0.1:0", tls=mutual), roles=False),
        "mTLS + roles": _serve(store, ServerConfig(bind="127.0.0.1:0", tls=mutual), roles=True),
    }
    variants = {
        "plaintext": (servers["plaintext"], None),
        "mTLS, no roles": (servers["mTLS, no roles"], admin),
        "mTLS + roles, admin": (servers["mTLS + roles"], admin),
        "mTLS + roles, tenant": (servers["mTLS + roles"], tenant),
    }
    request = policy_pb2.GetRoutingDomainRequest(rdid=rdid)
    stubs = {}
    channels = []
    for name, (server, client) in variants.items():
        if client is None:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        else:
            channel = grpc.secure_channel(f"localhost:{server.port}", client.credentials())
        channels.append(channel)
        stubs[name] = policy_pb2_grpc.PolicyServiceStub(channel)
        stubs[name].GetRoutingDomain(request, timeout=10)  # connect and warm up
    found: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, stub in stubs.items():
            found[name] += _latencies(_getter(stub, request), args.calls)
    print(f"GetRoutingDomain, {args.rounds} x {args.calls} sequential calls per variant, one client")
    print(f"{'variant':24} {'calls/s':>9} {'p50 us':>8} {'p99 us':>8}")
    base = statistics.median(found["plaintext"])
    for name, times in found.items():
        ordered = sorted(times)
        p50 = statistics.median(ordered)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        print(
            f"{name:24} {len(times) / sum(times):9.0f} {p50 * 1e6:8.0f} {p99 * 1e6:8.0f}"
            f"   p50 {p50 / base - 1:+.0%} vs plaintext"
        )
    for channel in channels:
        channel.close()
    for server in servers.values():
        server.stop()
    kv.close()


if __name__ == "__main__":
    main()
