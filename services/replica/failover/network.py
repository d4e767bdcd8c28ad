"""The network follows the VM: a failover moves the VM's lookup records to this site's host.

Which records move is pure (``record_moves``): each NIC with a CA is a record on its VSID; where a
VM starts with the failover settings (the DR site) the record moves from its CA to the failover CA
when one is set, where it starts with its own (the original primary, failing back) from the failover
CA back to its own. ``PolicyRecords`` is the shell: it resolves this site's host through the policy
service's registry (a host with no PA registered fails before anything changes), notes where each
record was, moves them all in one ``MoveLookupRecords`` transaction, and moves them back on cancel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from overland.client import PolicyClient
from overland.config import ClientConfig, Endpoint, Service, TlsFiles
from overland.errors import DeadlineExceededError, NotFoundError, UnavailableError
from overland.errors import OverlandError as ClientError
from overland.v1 import policy_pb2, replica_pb2
from services.common.errors import FailedPrecondition, NotFound
from services.replica.errors import HostNotRegistered, PeerUnavailable, ReplicaError
from services.replica.vm.definition import NetworkSettings

POLICY_SECONDS = 15.0


class RecordMoveRefused(ReplicaError, FailedPrecondition):
    """The policy service refused to move the VM's records (its message says why)."""


@dataclass(frozen=True)
class Move:
    """One record to move: on ``vsid``, from ``ca`` to ``new_ca`` (equal: the CA stays)."""

    vsid: int
    ca: str
    new_ca: str


@dataclass(frozen=True)
class MovedRecord:
    """A record a failover moved, and the PA it was on (cancel moves it back there)."""

    vsid: int
    ca: str
    new_ca: str
    pa_before: str

    def encode(self) -> dict[str, object]:
        return {"vsid": self.vsid, "ca": self.ca, "new_ca": self.new_ca, "pa_before": self.pa_before}

    @classmethod
    def decode(cls, doc: dict[str, object]) -> MovedRecord:
        return cls(int(str(doc["vsid"])), str(doc["ca"]), str(doc["new_ca"]), str(doc["pa_before"]))

    def label(self) -> str:
        return f"{self.vsid}/{self.new_ca}"


def record_moves(vm: replica_pb2.VirtualMachine, settings: NetworkSettings) -> list[Move]:
    """The records to move for ``vm`` to run here with ``settings`` (never TEST: a test failover
    touches no production record). A NIC without a CA has no record."""
    if settings is NetworkSettings.TEST:
        raise ValueError("a test failover moves no record")
    moves = []
    for nic in vm.nics:
        if not nic.ca:
            continue
        failover_ca = nic.failover_ca or nic.ca
        if settings is NetworkSettings.FAILOVER:
            moves.append(Move(nic.vsid, nic.ca, failover_ca))
        else:
            moves.append(Move(nic.vsid, failover_ca, nic.ca))
    return moves


class PolicyRecords:
    """The policy service as failover uses it: this site's host and its VMs' lookup records."""

    def __init__(self, endpoint: str, tls: TlsFiles | None, host_name: str):
        self.endpoint = endpoint
        self.host_name = host_name
        config = ClientConfig(endpoints={Service.POLICY: Endpoint(endpoint, tls)}, timeout=POLICY_SECONDS)
        self._client = PolicyClient(config=config)

    def _failed(self, error: ClientError, what: str) -> ReplicaError:
        if isinstance(error, UnavailableError | DeadlineExceededError):
            return PeerUnavailable(f"the policy service at {self.endpoint} did not answer ({what}): {error}")
        return RecordMoveRefused(f"the policy service refused to {what}: {error}")

    def host_pa(self) -> str:
        """This site's host's registered PA; ``HostNotRegistered`` if it has none."""
        try:
            host = self._client.get_host(host_name=self.host_name)
        except NotFoundError:
            host = None
        except ClientError as error:
            raise self._failed(error, f"look up host {self.host_name!r}") from None
        if host is None or not host.pa_ip:
            raise HostNotRegistered(
                f"host {self.host_name!r} (this site's --host-name) has no PA registered with the policy "
                f"service at {self.endpoint}: its vswitch agent registers it; nothing was changed"
            )
        return host.pa_ip

    def move_here(self, moves: Sequence[Move]) -> list[MovedRecord]:
        """Move the records to this site's host in one transaction; what was moved, and from where."""
        if not moves:
            return []
        before = {}
        for move in moves:
            try:
                record = self._client.get_lookup_record(vsid=move.vsid, ca=move.ca)
            except NotFoundError:
                raise _missing(move) from None
            except ClientError as error:
                raise self._failed(error, f"read the record {move.vsid}/{move.ca}") from None
            before[(move.vsid, move.ca)] = record.pa
        self._move(moves, host_name=self.host_name)
        return [MovedRecord(m.vsid, m.ca, m.new_ca, before[(m.vsid, m.ca)]) for m in moves]

    def move_back(self, moved: Sequence[MovedRecord]) -> None:
        """Cancel: each record back to its CA and the PA it was on."""
        for pa in sorted({record.pa_before for record in moved}):
            back = [Move(r.vsid, r.new_ca, r.ca) for r in moved if r.pa_before == pa]
            self._move(back, pa=pa)

    def _move(self, moves: Sequence[Move], **destination: str) -> None:
        request = [
            policy_pb2.RecordMove(vsid=m.vsid, ca=m.ca, new_ca=m.new_ca if m.new_ca != m.ca else "")
            for m in moves
        ]
        try:
            self._client.move_lookup_records(moves=request, **destination)
        except NotFoundError as error:
            raise UnknownRecord(f"the policy service has no such record: {error}") from None
        except ClientError as error:
            raise self._failed(error, "move the VM's lookup records") from None

    def close(self) -> None:
        self._client.close()


class UnknownRecord(ReplicaError, NotFound):
    """A NIC's lookup record is not in the routing table."""


def _missing(move: Move) -> UnknownRecord:
    return UnknownRecord(
        f"the VM's NIC on VSID {move.vsid} has CA {move.ca}, but the routing table has no such record: "
        "nothing was changed"
    )
