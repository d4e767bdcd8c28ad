"""The bulk engine: applies a stream of lookup record changes in as few transactions as fit.

``RecordApply`` plans with ``record_planner`` and reads and writes through ``RecordTxns``, the narrow
interface it needs of the store (``TableTxns`` is the real one); it holds the changes fed and not
yet committed, and what it has learned of the store's keys, and nothing else.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from overland.v1 import types_pb2
from services.common.errors import FieldViolation, ServiceError, bounded_violations
from services.common.kv import Compare, KeyValue, Op, TxnResult
from services.common.schema import CorruptEntry
from services.policy.errors import PolicyError, ResourceExists, StaleRevision
from services.policy.record_planner import (
    Mode,
    RecordChange,
    TableState,
    keys_of,
    plan_transaction,
    prerequisite_keys,
)

log = logging.getLogger(__name__)

# How many upcoming bulk changes get their VSID and PA keys read ahead in one round trip.
PREFETCH_WINDOW = 2048


class RecordTxns(Protocol):
    """What applying records needs of the store."""

    @property
    def max_ops(self) -> int:
        """The limit on the compares, and on the ops, of one transaction."""
        ...

    @property
    def max_attempts(self) -> int:
        """How many lost races in a row give up (ABORTED)."""
        ...

    def current_revision(self) -> int: ...

    def encoder(self) -> Callable[[types_pb2.LookupRecord], bytes]:
        """The stored value of a record, with the clock and trace context read once."""
        ...

    def read_keys(self, wanted: Sequence[bytes]) -> dict[bytes, KeyValue | None]: ...

    def write(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """One transaction that changes the table."""
        ...


@dataclass(frozen=True)
class ApplyResult:
    applied: int
    transactions: int
    revision: int
    # Stored records that upserts replaced with a different one.
    replaced: int = 0


# How many existing records a refused create-only load names.
NAMED_EXISTING = 50


def bulk_failure(cause: ServiceError, applied: int, transactions: int) -> ServiceError:
    """A copy of the error that stopped a bulk apply (same category, so the same gRPC code) whose
    message says how much was committed before it."""
    message = (
        f"{cause.message} ({applied} records applied in {transactions} transactions before the failure; "
        "retrying the same stream completes the load)"
    )
    error = copy.copy(cause)
    error.message = message
    error.args = (message,)
    return error


def learn(txns: RecordTxns, state: TableState, wanted: Sequence[bytes]) -> None:
    """Read ``wanted`` into ``state``."""
    for key, value in txns.read_keys(wanted).items():
        state.learn(key, value)


class RecordApply:
    """Applies lookup record changes in order, in as few transactions as fit the ops limit.

    A bulk stream feeds each request message's changes as it arrives: every transaction that is full
    by then commits, and only the changes not yet committed are held, so a stream of any length takes
    bounded memory and etcd starts writing while the stream still arrives. ``finish`` commits the
    rest. A failure is raised with the count committed before it in its message."""

    def __init__(self, txns: RecordTxns) -> None:
        self._txns = txns
        self._state = TableState()
        # Changes fed and not yet committed start at _pending[_position].
        self._pending: list[RecordChange] = []
        self._position = 0
        self._prefetched_to = 0
        self._failures = 0
        # Values of ``applied`` at which the planned change was already read afresh.
        self._refreshed: set[int] = set()
        self._started = time.monotonic()
        self.applied = 0
        self.transactions = 0
        self.revision = 0
        self.replaced = 0

    def feed(self, changes: Sequence[RecordChange]) -> None:
        """Take more changes; commit every transaction they fill."""
        self._pending += changes
        self._advance(final=False)

    def finish(self) -> ApplyResult:
        """Commit what is left."""
        self._advance(final=True)
        result = ApplyResult(
            self.applied, self.transactions, self.revision or self._txns.current_revision(), self.replaced
        )
        log.info(
            "bulk apply",
            extra={
                "records": result.applied,
                "transactions": result.transactions,
                "replaced": result.replaced,
                "revision": result.revision,
                "seconds": round(time.monotonic() - self._started, 3),
            },
        )
        return result

    def stopped_by(self, error: ServiceError) -> ServiceError:
        """``error``, which stops the stream before the changes not yet fed, after committing the
        ones that were, with that count in its message."""
        self._advance(final=True)
        return bulk_failure(error, self.applied, self.transactions)

    def _advance(self, *, final: bool) -> None:
        try:
            self._commit_ready(final=final)
        except ServiceError as error:
            raise bulk_failure(error, self.applied, self.transactions) from error
        # What is committed is no longer needed.
        del self._pending[: self._position]
        self._prefetched_to -= self._position
        self._position = 0

    def _prefetch(self, position: int) -> None:
        """Read the VSID index and PA keys of the next window of changes in one round trip, then the
        subnets those indexes name in another (a write checks its record against its subnet: read
        later, each new VSID would cut a transaction short)."""
        changes, state = self._pending, self._state
        end = min(len(changes), position + PREFETCH_WINDOW)
        wanted: dict[bytes, None] = {}
        for change in changes[position:end]:
            for key in prerequisite_keys(change):
                if not state.known(key):
                    wanted[key] = None
        learn(self._txns, state, list(wanted))
        subnets: dict[bytes, None] = {}
        for change in changes[position:end]:
            index = state.get(change.vsid_key) if change.pa_key is not None else None
            if index is not None:
                key = state.subnet_key(index.value, change.record.vsid)
                if not state.known(key):
                    subnets[key] = None
        if subnets:
            learn(self._txns, state, list(subnets))
        self._prefetched_to = end

    def _commit_ready(self, *, final: bool) -> None:
        txns, state, changes = self._txns, self._state, self._pending
        max_ops = txns.max_ops
        while self._position < len(changes):
            position = self._position
            # A change takes at least one of a transaction's ops or compares, so this many more
            # fill a transaction: before the stream ends, fewer wait for the next message.
            if not final and len(changes) - position < max_ops:
                return
            if position >= self._prefetched_to:
                self._prefetch(position)
            try:
                plan = plan_transaction(changes, position, state, max_ops - 1, txns.encoder())
            except ResourceExists as error:
                if self.applied in self._refreshed or self._failures:
                    raise self._existing(position, error) from None
                self._refresh(position)
                continue
            except (PolicyError, CorruptEntry):
                # Decide on fresh reads before failing: the state may be from an earlier read
                # (unless it was just read back after a lost race).
                if self.applied in self._refreshed or self._failures:
                    raise
                self._refresh(position)
                continue
            if plan.end == position:
                if not plan.needs:
                    raise AssertionError("a record plan made no progress and needs nothing")
                learn(txns, state, plan.needs)
                continue
            if plan.must_commit:
                # Uncontended, the failure branch is left empty (it would double the request);
                # after a lost race it reads back every compared key.
                reads = plan.failure_reads() if self._failures else []
                result = txns.write(plan.compares, plan.success, reads)
                if not result.succeeded:
                    self._failures += 1
                    if self._failures >= txns.max_attempts:
                        raise StaleRevision(
                            f"lost {self._failures} races with concurrent writers of the same records; retry"
                        )
                    if reads:
                        for get, found in zip(reads, result.responses, strict=True):
                            state.learn(get.key, found[0] if found else None)
                    else:
                        learn(txns, state, [get.key for get in plan.failure_reads()])
                    continue
                state.committed(plan.writes)
                self.revision = result.revision
                self.transactions += 1
                self.replaced += plan.replaced
            self.applied += plan.end - position
            self._position = plan.end
            self._failures = 0

    def _refresh(self, position: int) -> None:
        """Forget what the change at ``position`` decided on, and read its prerequisites again."""
        state, change = self._state, self._pending[position]
        self._refreshed.add(self.applied)
        for key in keys_of(change, state):
            state.forget(key)
        learn(self._txns, state, prerequisite_keys(change))

    def _existing(self, position: int, error: ResourceExists) -> ResourceExists:
        """The refusal of a create at ``position`` (``error``): for a create-only load whose record
        exists, every create fed from there on (up to a prefetch window) whose record exists, the
        first ``NAMED_EXISTING`` of them named; else ``error`` itself (a MAC taken)."""
        state = self._state
        if self._pending[position].mode is not Mode.CREATE:
            return error
        creates = [c for c in self._pending[position : position + PREFETCH_WINDOW] if c.mode is Mode.CREATE]
        wanted = {}
        for change in creates:
            subnet = state.get(change.vsid_key)
            # A subnet of a domain the load may not reach holds nothing it may know of.
            if subnet is not None and change.domain in (None, subnet.value):
                wanted[state.record_key(subnet.value, change.record.vsid, change.ca_bytes)] = change
        found = self._txns.read_keys(list(wanted))
        existing = [change for key, change in wanted.items() if found.get(key) is not None]
        if not existing:
            return error
        # As many as the status has room for (bounded_violations), and the message says how many.
        shown = bounded_violations(
            tuple(
                FieldViolation(f"{c.field}.ca", f"VSID {c.record.vsid} already has {c.record.ca}")
                for c in existing[:NAMED_EXISTING]
            )
        )
        named = f" (the first {len(shown)} are named)" if len(existing) > len(shown) else ""
        return ResourceExists(
            f"create-only: {len(existing)} of the next {len(creates)} records exist already{named}", shown
        )
