"""What the SDK costs over the raw generated stub: unary calls per second and paged-list items per second,
each beside the raw stub doing the same calls in the same run, against one in-process gRPC server.

``python -m bench.sdk_overhead [--calls N] [--items N]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from overland import ClientConfig, Endpoint, PolicyClient, Service
from overland.v1 import policy_pb2, policy_pb2_grpc, types_pb2


class _Servicer(policy_pb2_grpc.PolicyServiceServicer):
    """Answers from memory, so that the numbers measure the client side, not a store."""

    def __init__(self, items: int) -> None:
        self.domains = [
            types_pb2.RoutingDomain(rdid=f"rd-{i:06d}", tenant_name=f"t{i}") for i in range(items)
        ]

    def GetTableStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - the RPC name
        return policy_pb2.GetTableStatusResponse(revision=42)

    def ListRoutingDomains(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        start = int(request.page.page_token or 0)
        end = start + (request.page.page_size or 100)
        token = str(end) if end < len(self.domains) else ""
        return policy_pb2.ListRoutingDomainsResponse(
            routing_domains=self.domains[start:end], next_page_token=token
        )


def _rate(count: int, run: Callable[[], int]) -> float:
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    assert done == count, f"expected {count}, got {done}"
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--items", type=int, default=50_000)
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = _Servicer(args.items)  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    config = ClientConfig(endpoints={Service.POLICY: Endpoint(address)}, timeout=10, page_size=1000)
    try:
        with grpc.insecure_channel(address) as channel, PolicyClient(config=config) as client:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            request = policy_pb2.GetTableStatusRequest()

            def raw_calls() -> int:
                return sum(1 for _ in range(args.calls) if stub.GetTableStatus(request, timeout=10).revision)

            def sdk_calls() -> int:
                return sum(1 for _ in range(args.calls) if client.get_table_status().revision)

            def raw_list() -> int:
                count, token = 0, ""
                while True:
                    page = types_pb2.PageRequest(page_size=1000, page_token=token)
                    response = stub.ListRoutingDomains(
                        policy_pb2.ListRoutingDomainsRequest(page=page), timeout=10
                    )
                    count += sum(1 for _ in response.routing_domains)
                    token = response.next_page_token
                    if not token:
                        return count

            def sdk_list() -> int:
                return sum(1 for _ in client.list_routing_domains())

            raw_calls()  # warm the channel up before either side is timed
            sdk_rate, raw_rate = _rate(args.calls, sdk_calls), _rate(args.calls, raw_calls)
            print(f"unary GetTableStatus: sdk {sdk_rate:,.0f}/s  baseline raw stub {raw_rate:,.0f}/s")
            sdk_rate, raw_rate = _rate(args.items, sdk_list), _rate(args.items, raw_list)
            print(
                f"paged list of {args.items} items, pages of 1000: sdk {sdk_rate:,.0f} items/s"
                f"  baseline raw stub {raw_rate:,.0f} items/s"
            )
    finally:
        server.stop(0).wait()


if __name__ == "__main__":
    main()
