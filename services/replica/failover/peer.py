"""Calls a failover makes to the VM's other site: is the primary there (an unplanned failover is
allowed only when it does not answer), and adopt (the old primary keeps its disks as the replica of
a reversed replication). Both over the channel a replication would use (mutual TLS with the site's
client certificate, else the development-only name header)."""

from __future__ import annotations

import logging

import grpc

from overland.config import TlsFiles
from overland.v1 import replica_pb2, replica_pb2_grpc
from services.replica.config import PRIMARY_HEADER
from services.replica.primary.sender import as_error, channel_to

log = logging.getLogger(__name__)

# An unplanned failover asks the primary once, briefly: a site that does not answer in this time is
# taken for lost (``force`` overrides the answer either way).
PROBE_SECONDS = 3.0
ADOPT_SECONDS = 60.0
_NO_ANSWER = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Peers:
    """This site as a client of the others, named ``site_name``."""

    def __init__(self, site_name: str, tls: TlsFiles | None):
        self.site_name = site_name
        self._tls = tls

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self._tls else ((PRIMARY_HEADER, self.site_name),)

    def answers(self, endpoint: str, vm_name: str) -> bool:
        """Whether the site at ``endpoint`` answers (any answer: it is up, and may run the VM)."""
        if not endpoint:
            return False
        with channel_to(endpoint, self._tls) as channel:
            stub = replica_pb2_grpc.ReplicaServiceStub(channel)
            try:
                stub.GetReplication(replica_pb2.GetReplicationRequest(vm_name=vm_name), timeout=PROBE_SECONDS)
            except grpc.RpcError as error:
                if error.code() in _NO_ANSWER:
                    return False
                log.info("the primary answered the probe", extra={"vm": vm_name, "code": error.code().name})
        return True

    def adopt(
        self, endpoint: str, request: replica_pb2.AdoptReplicaRequest
    ) -> replica_pb2.AdoptReplicaResponse:
        """Ask the site at ``endpoint`` to keep its disks of the VM as this site's replica."""
        with channel_to(endpoint, self._tls) as channel:
            stub = replica_pb2_grpc.ReplicaReceiverServiceStub(channel)
            try:
                response: replica_pb2.AdoptReplicaResponse = stub.AdoptReplica(
                    request, timeout=ADOPT_SECONDS, metadata=self._metadata
                )
                return response
            except grpc.RpcError as error:
                raise as_error(
                    error, f"adopting VM {request.vm_name!r}'s replica", site=f"site {endpoint}"
                ) from None
