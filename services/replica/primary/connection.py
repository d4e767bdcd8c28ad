"""Test-VMReplicationConnection: can this site replicate to a DR site? Four checks, each with its own
message, run in order; a check that cannot run because an earlier one failed is SKIPPED.

1. **reachability** — a TCP connection to the DR site's replica endpoint.
2. **tls** — with this site's client TLS (``--client-ca/--client-cert/--client-key``), a TLS handshake
   that presents its certificate and verifies the DR site's; without it, plaintext (the DR site then
   takes this site's name from a header: development only), unless the DR site does not answer
   plaintext gRPC, which means it wants TLS.
3. **authorization** — ``CheckReplicaServer`` at the DR site: it answers only a site on its allow-list,
   and says the name it knows this one by.
4. **free_space** — the free bytes where the DR site keeps this site's replicas, against what the VM
   needs there (its disk files' allocated bytes, less what the DR site holds of it already).

``EnableReplication`` runs the same checks and refuses a DR site that fails one (``refusal``), unless
the first copy goes by external media.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import grpc

from overland.config import TlsFiles
from overland.units import size
from overland.v1 import replica_pb2
from services.common.errors import FailedPrecondition, ServiceError
from services.replica.errors import ReplicaError, ReplicaStorageFull, UnauthorizedPrimary

# How long each network check waits for the DR site.
CHECK_SECONDS = 5.0
PASSED = replica_pb2.CHECK_RESULT_PASSED
FAILED = replica_pb2.CHECK_RESULT_FAILED
SKIPPED = replica_pb2.CHECK_RESULT_SKIPPED
CHECKS = ("reachability", "tls", "authorization", "free_space")

Ask = Callable[[], replica_pb2.ReplicaServerCheck]


class ReplicaServerUnusable(ReplicaError, FailedPrecondition):
    """The DR site cannot be replicated to: unreachable, or TLS does not work with it."""


def _check(name: str, ok: bool, message: str, code: str = "") -> replica_pb2.ConnectionCheck:
    return replica_pb2.ConnectionCheck(
        name=name, result=PASSED if ok else FAILED, message=message, error_code="" if ok else code
    )


def _split(endpoint: str) -> tuple[str, int]:
    host, _sep, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def _reach(endpoint: str) -> replica_pb2.ConnectionCheck:
    try:
        socket.create_connection(_split(endpoint), timeout=CHECK_SECONDS).close()
    except OSError as error:
        why = error.strerror or str(error) or type(error).__name__
        return _check(
            "reachability",
            False,
            f"cannot connect to {endpoint}: {why} (is its replica service running there?)",
            "UNAVAILABLE",
        )
    return _check("reachability", True, f"{endpoint} accepts connections")


def _handshake(endpoint: str, tls: TlsFiles) -> replica_pb2.ConnectionCheck:
    host, port = _split(endpoint)
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
        if tls.cert is not None and tls.key is not None:
            context.load_cert_chain(str(tls.cert), str(tls.key))
        context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection((host, port), timeout=CHECK_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=tls.server_name or host) as secured,
        ):
            version = secured.version()
    except (OSError, ssl.SSLError) as error:
        return _check(
            "tls",
            False,
            f"TLS with {endpoint} failed: {error} (check --client-ca/--client-cert/--client-key)",
            "UNAVAILABLE",
        )
    mutual = "with this site's client certificate" if tls.cert else "without a client certificate"
    return _check("tls", True, f"{version} {mutual}; the DR site's certificate verified")


def _plaintext() -> replica_pb2.ConnectionCheck:
    return _check(
        "tls",
        True,
        "plaintext: this site has no client TLS (--client-ca/--client-cert/--client-key), so the DR site "
        "takes its name from a header (development only)",
    )


def check_connection(
    endpoint: str, tls: TlsFiles | None, ask: Ask, needed: int | None
) -> replica_pb2.ConnectionTest:
    """Run the checks against ``endpoint``; ``ask`` calls CheckReplicaServer there, ``needed`` is what
    the VM needs (None: no VM in question)."""
    result = replica_pb2.ConnectionTest(replica_server=endpoint)
    checks = [_reach(endpoint)]
    if checks[0].result == PASSED:
        checks.append(_handshake(endpoint, tls) if tls is not None else _plaintext())
    if checks[-1].result == PASSED:
        answer = _ask(ask, checks, tls is None, endpoint)
        if answer is not None:
            result.dr_site_name, result.known_as = answer.site_name, answer.primary
            result.free_bytes, result.total_bytes = answer.free_bytes, answer.total_bytes
            result.needed_bytes = max(0, needed - answer.replica_bytes) if needed is not None else 0
            checks.append(_space(answer, None if needed is None else result.needed_bytes))
    done = {check.name for check in checks}
    checks += [
        replica_pb2.ConnectionCheck(name=name, result=SKIPPED, message="not run: an earlier check failed")
        for name in CHECKS
        if name not in done
    ]
    result.checks.extend(checks)
    result.ok = all(check.result == PASSED for check in checks)
    return result


def _ask(
    ask: Ask, checks: list[replica_pb2.ConnectionCheck], plaintext: bool, endpoint: str
) -> replica_pb2.ReplicaServerCheck | None:
    """CheckReplicaServer: the authorization check (and, for a plaintext caller the DR site does not
    answer, the TLS check's failure)."""
    try:
        answer = ask()
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            checks.append(_check("authorization", False, details, code.name))
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            message = f"{endpoint} does not receive replicas: its site runs without an allow-list (--allow)"
            checks.append(_check("authorization", False, message, "FAILED_PRECONDITION"))
        elif plaintext and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            # It accepted the connection (reachability) but no plaintext gRPC call: a TLS server.
            checks[-1] = _check(
                "tls",
                False,
                f"{endpoint} accepts connections but does not answer plaintext gRPC ({code.name}): it most "
                "likely wants TLS; give this site --client-ca/--client-cert/--client-key",
                code.name,
            )
        else:
            checks.append(
                _check(
                    "authorization", False, f"the DR site did not answer: {code.name}: {details}", code.name
                )
            )
        return None
    checks.append(
        _check(
            "authorization",
            True,
            f"allowed: DR site {answer.site_name!r} knows this site as {answer.primary!r}",
        )
    )
    return answer


def _space(answer: replica_pb2.ReplicaServerCheck, needed: int | None) -> replica_pb2.ConnectionCheck:
    where = "where the DR site keeps this site's replicas"
    free = f"{size(answer.free_bytes)} free of {size(answer.total_bytes)} {where}"
    if needed is None:
        return _check("free_space", True, free)
    if answer.free_bytes >= needed:
        return _check("free_space", True, f"{free}; the VM needs about {size(needed)}")
    return _check(
        "free_space",
        False,
        f"{free}, but the VM needs about {size(needed)}: free space there first",
        "RESOURCE_EXHAUSTED",
    )


def refusal(vm: str, test: replica_pb2.ConnectionTest) -> ServiceError:
    """Why EnableReplication refuses a DR site that failed ``test``, as the error of its first failure."""
    failed = next(check for check in test.checks if check.result == FAILED)
    hint = (
        "; with --initial-method external-media the first copy needs no connection"
        if failed.name in ("reachability", "tls")
        else ""
    )
    message = (
        f"replication of VM {vm!r} to {test.replica_server} not enabled: {failed.name.replace('_', ' ')}: "
        f"{failed.message} ('overland replica test-connection' runs every check{hint})"
    )
    if failed.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return UnauthorizedPrimary(message)
    if failed.error_code == "RESOURCE_EXHAUSTED":
        return ReplicaStorageFull(message)
    return ReplicaServerUnusable(message)
