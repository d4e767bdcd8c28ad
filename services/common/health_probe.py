"""``python -m services.common.health_probe HOST:PORT [SERVICE]``: ask a service's gRPC health over TLS.

For Kubernetes exec probes: the kubelet's own gRPC probe speaks plaintext only, and the services listen
beyond loopback with TLS alone (docs/security.md). The TLS settings are the clients' variables
(``OVERLAND_TLS_CA``, ``OVERLAND_TLS_CERT``, ``OVERLAND_TLS_KEY``, ``OVERLAND_TLS_SERVER_NAME``; none:
plaintext). Exit 0 when the service answers SERVING, 1 when it does not (one line saying why), 2 for
arguments or TLS files it cannot use.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from overland.config import ClientConfig, Endpoint, Service
from overland.errors import ConfigurationError

PROG = "python -m services.common.health_probe"
TIMEOUT_SECONDS = 5.0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        sys.stderr.write(f"usage: {PROG} HOST:PORT [SERVICE]\n")
        return 2
    try:
        tls = ClientConfig.from_env(env).endpoint(Service.POLICY).tls
        endpoint = Endpoint(args[0], tls)
        endpoint.validate()
        channel = endpoint.channel()
    except ConfigurationError as error:
        sys.stderr.write(f"{PROG}: {error.message}\n")
        return 2
    request = health_pb2.HealthCheckRequest(service=args[1] if len(args) > 1 else "")
    with channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=TIMEOUT_SECONDS).status
        except grpc.RpcError as error:
            sys.stderr.write(f"{PROG}: {args[0]}: {error.code().name}: {error.details()}\n")
            return 1
    if status != health_pb2.HealthCheckResponse.SERVING:
        sys.stderr.write(f"{PROG}: {args[0]}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
