"""The policy store's access to etcd: reads at one revision and the writes that change the table.

``TableTxns`` is what every write path shares, the store's single-resource writes and the record
apply engine alike: each write moves the table revision marker (docs/key-schema.md), values are
encoded with the clock and trace context of the call, and a write that lost a race is retried a
bounded number of times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

from overland.v1 import types_pb2
from services.common.kv import KV, Compare, Get, KeyValue, Op, Put, TxnResult
from services.common.schema import Resource, encode_entry, keys
from services.policy.errors import StaleRevision

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 16


class TableTxns:
    """Transactions on the routing table over a ``KV``; keeps no state between calls."""

    def __init__(
        self,
        kv: KV,
        *,
        clock: Callable[[], int] = time.time_ns,
        trace_context: Callable[[], types_pb2.TraceContext | None] = lambda: None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.kv = kv
        self.max_attempts = max_attempts
        self._clock = clock
        self._trace_context = trace_context

    @property
    def max_ops(self) -> int:
        """The store's limit on the compares, and on the ops, of one transaction."""
        return self.kv.max_txn_ops

    def current_revision(self) -> int:
        return self.kv.current_revision()

    def encode(self, resource: Resource) -> bytes:
        """The stored value of a resource; the trace context of the current call goes in here."""
        return self.encoder()(resource)

    def encoder(self) -> Callable[[Resource], bytes]:
        """``encode`` with the clock and the trace context read once, for the many records of one
        transaction."""
        write_time, trace = self._clock(), self._trace_context()
        return lambda resource: encode_entry(resource, write_time, trace)

    def snapshot(self, gets: Sequence[Get]) -> tuple[list[tuple[KeyValue, ...]], int]:
        """Several reads at one revision, in one round trip."""
        result = self.kv.txn([], list(gets))
        return list(result.responses), result.revision

    def read_keys(self, wanted: Sequence[bytes]) -> dict[bytes, KeyValue | None]:
        """Each key's KeyValue (None: absent), in as few round trips as the ops limit allows."""
        found: dict[bytes, KeyValue | None] = {}
        step = self.max_ops
        for offset in range(0, len(wanted), step):
            chunk = wanted[offset : offset + step]
            responses, _ = self.snapshot([Get(key) for key in chunk])
            found.update((key, kvs[0] if kvs else None) for key, kvs in zip(chunk, responses, strict=True))
        return found

    def write(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """A transaction that changes the table; it also moves the table revision marker."""
        return self.kv.txn(compares, [*success, Put(keys.TABLE_REVISION_KEY, b"")], failure)

    def attempts(self, what: str) -> Iterator[int]:
        """Bounded retries of a write that lost a race; gives up with ABORTED."""
        for attempt in range(self.max_attempts):
            if attempt:
                log.debug("write lost a race, retrying", extra={"what": what, "attempt": attempt})
            yield attempt
        raise StaleRevision(f"{what}: lost {self.max_attempts} races with concurrent writers; retry later")
