"""The vswitch agent of one host: its routing table kept in sync with etcd, its host registration, and the
datapath it feeds.

``Agent`` ties together
- a ``TableWatcher`` (watcher.py) that keeps the ``RoutingTable`` equal to etcd and hands every delta,
  from one thread, to the datapath (``Datapath.apply``) and to an optional ``on_apply`` hook (benches);
- a ``HostRegistration`` that registers the host's name and PA for good under
  ``/overland/v1/registry/hosts/{host}`` (a ``Host``: a site's PA is found by its host name even
  while its agent is down), and keeps ``/overland/v1/hosts/{host}`` (a ``HostStatus``) alive on an
  etcd lease (kept alive every TTL/3, re-created if etcd lost it), publishing the applied revision at
  most once per ``status_interval`` and only when it changed, so anyone can see how far behind each
  host is.

With no datapath (``table_only``) the agent keeps only the table: tests and benches run many of them.
Losing etcd changes nothing that is applied: forwarding goes on with the last table.

With ``table_snapshot`` the agent also keeps its last applied table in a local file (snapshot.py), saved
at most every ``snapshot_interval`` while the table changes and on stop. ``resume`` (the first thing
``start`` does) loads it and starts the datapath on it before etcd is reached, so a restarted agent
forwards again as soon as the process runs; the cold sync that follows hands the datapath only the
difference.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from overland.v1 import types_pb2, vswitch_pb2
from services.common.clock import SYSTEM_CLOCK, Clock
from services.common.errors import Unavailable
from services.common.kv import KV, Compare, KVLeaseNotFoundError, Put
from services.common.schema import CorruptEntry, encode_entry, keys, resource_from
from services.common.table import RoutingTable, TableDelta
from services.vswitch.config import AgentConfig
from services.vswitch.datapath_interface import Datapath
from services.vswitch.snapshot import TableSnapshots, resume_forwarding
from services.vswitch.watcher import ApplyCallback, TableWatcher, watch_prefixes

if TYPE_CHECKING:
    # OpenTelemetry is imported only by an agent that has telemetry (a restart must not wait for it).
    from services.vswitch.telemetry import AgentTelemetry

log = logging.getLogger(__name__)

# How long stopping waits for the agent's threads and the lease revoke, together. With etcd up they
# take milliseconds; with etcd down or hung each etcd call would wait its whole deadline (5 s), so a
# thread still inside one is left behind (a daemon; closing the etcd client ends its call) and the
# revoke gives up (the lease then expires at its TTL). The agent process stops within 1 s either way.
STOP_SECONDS = 0.4
# The revoke's deadline when the threads used up the budget: etcd answers a revoke in milliseconds.
_REVOKE_MIN_SECONDS = 0.1


def status_due(
    *, now: float, last_time: float, published: int, applied: int, changed: int, interval: float
) -> tuple[bool, float]:
    """Whether to publish the ``applied`` revision now, and else how long until it may be (0: nothing
    to publish).

    Only table changes call for a status write: while the ``published`` revision is below the newest
    change (``changed``) and the applied revision moved. Progress alone (writes outside the table,
    such as other hosts' status) must not, or every host's write would make every host write again.
    Publishing is also rate-limited: a host applies many revisions a second under load.
    """
    if published >= changed or applied == published:
        return False, 0.0
    wait = last_time + interval - now
    if wait <= 0:
        return True, 0.0
    return False, wait


def registration_to_write(
    stored: types_pb2.Host | None, host_name: str, pa_ip: str, now_ns: int
) -> types_pb2.Host | None:
    """The registration to store for this host, or ``None`` when the stored one already says so. A
    restart on the same PA keeps the stored one (and its registration time); a new PA, or none
    stored (or one that does not decode: ``None``), is registered now."""
    if stored is not None and stored.host_name == host_name and stored.pa_ip == pa_ip:
        return None
    return types_pb2.Host(host_name=host_name, pa_ip=pa_ip, registration_time_unix_nanos=now_ns)


class HostRegistration:
    """The host's registration (for good) and its status key on a lease: registered, kept alive,
    re-registered, and updated with the applied revision (see ``status_due``)."""

    def __init__(
        self,
        kv: KV,
        config: AgentConfig,
        applied: Callable[[], tuple[int, int, int]],
        *,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self._kv = kv
        self._config = config
        self._applied = applied
        self._clock = clock
        self._wake = threading.Event()
        self._lease_id = 0
        self._lease_refreshed = 0.0
        self._published_revision = -1
        self._published_time = float("-inf")
        self.registered = False
        self.writes = 0

    def notify(self) -> None:
        """The applied revision changed: publish it when the rate limit allows."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        keepalive = self._config.lease_ttl / 3
        attempt = 0
        rng = random.Random()  # noqa: S311 - backoff jitter, not secrets
        while not stop.is_set():
            # Cleared before the step, so a notify that arrives during it cuts the next wait short.
            self._wake.clear()
            rate_limited = False
            try:
                wait, rate_limited = self._step(keepalive)
                attempt = 0
            except Unavailable as error:
                if self.registered:
                    log.warning(
                        "lost etcd; the host key expires unless it returns", extra={"error": error.message}
                    )
                self.registered = False
                wait = self._config.backoff.delay(attempt, rng.random())
                attempt += 1
            # While rate-limited, more applied revisions must not wake the thread once per change.
            (stop if rate_limited else self._wake).wait(wait)

    def _step(self, keepalive: float) -> tuple[float, bool]:
        """One round of keepalive and publishing; how long to wait, and whether for the rate limit."""
        now = self._clock.monotonic()
        if not self.registered:
            self._register()
            now = self._clock.monotonic()
        elif now - self._lease_refreshed >= keepalive:
            if self._kv.refresh_lease(self._lease_id) <= 0:
                log.warning("host lease expired, registering again", extra={"lease": self._lease_id})
                self._register()
            self._lease_refreshed = now
        revision, _, changed = self._applied()
        due, rate_wait = status_due(
            now=now,
            last_time=self._published_time,
            published=self._published_revision,
            applied=revision,
            changed=changed,
            interval=self._config.status_interval,
        )
        if due:
            try:
                self._publish()
            except KVLeaseNotFoundError:
                self._register()
        until_keepalive = max(self._lease_refreshed + keepalive - self._clock.monotonic(), 0.0)
        if rate_wait and rate_wait < until_keepalive:
            return rate_wait, True
        return until_keepalive, False

    def _register(self) -> None:
        self._write_registration()
        lease = self._kv.grant_lease(self._config.lease_ttl)
        self._lease_id = lease.id
        self._lease_refreshed = self._clock.monotonic()
        self._publish()
        self.registered = True
        log.info("host registered", extra={"host": self._config.host_name, "lease": lease.id})

    def _write_registration(self) -> None:
        """Store the host's name and PA unless they are stored already; a writer that got there in
        between (another agent claiming the name) is read again, at most a few times."""
        key = keys.registration_key(self._config.host_name)
        for _ in range(3):
            found = self._kv.get(key)
            try:
                stored = resource_from(found, types_pb2.Host) if found is not None else None
            except CorruptEntry:
                stored = None
            wanted = registration_to_write(
                stored, self._config.host_name, self._config.pa_ip, self._clock.time_ns()
            )
            if wanted is None:
                return
            if stored is not None:
                log.warning(
                    "host registered with another PA; registering this one",
                    extra={"host": self._config.host_name, "was": stored.pa_ip, "pa": self._config.pa_ip},
                )
            guard = Compare.mod_revision_is(key, found.mod_revision) if found else Compare.absent(key)
            value = encode_entry(wanted, wanted.registration_time_unix_nanos)
            if self._kv.txn([guard], [Put(key, value)]).succeeded:
                log.info(
                    "host PA registered", extra={"host": self._config.host_name, "pa": self._config.pa_ip}
                )
                return
        log.warning(
            "host registration kept changing under this agent", extra={"host": self._config.host_name}
        )

    def _publish(self) -> None:
        revision, applied_ns, _ = self._applied()
        status = types_pb2.HostStatus(
            host_name=self._config.host_name,
            pa_ip=self._config.pa_ip,
            applied_revision=revision,
            applied_time_unix_nanos=applied_ns,
        )
        value = encode_entry(status, self._clock.time_ns())
        self._kv.txn([], [Put(keys.host_key(self._config.host_name), value, lease=self._lease_id)])
        self.writes += 1
        self._published_revision = revision
        self._published_time = self._clock.monotonic()

    def unregister(self, timeout: float | None = None) -> None:
        """Revoke the lease so the host key goes now rather than at TTL (best effort on the way out,
        within ``timeout`` when given)."""
        if not self._lease_id:
            return
        try:
            self._kv.revoke_lease(self._lease_id, timeout=timeout)
        except (Unavailable, KVLeaseNotFoundError) as error:
            log.info("host lease not revoked; it expires on its own", extra={"error": error.message})
        self.registered = False


class Agent:
    """One host's agent (see the module docstring). ``start``/``stop``; queries are thread-safe."""

    def __init__(
        self,
        config: AgentConfig,
        kv: KV,
        datapath: Datapath | None = None,
        *,
        on_apply: ApplyCallback | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        telemetry: AgentTelemetry | None = None,
        resumed: RoutingTable | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ):
        """``resumed``: the table the caller already started ``datapath`` on (``resume_forwarding``)."""
        config.validate()
        self.config = config
        self.kv = kv
        self.datapath = datapath
        self.table = resumed if resumed is not None else RoutingTable()
        # The datapath reads the table under its ``table_lock``: updates take the same lock, so a packet
        # decision never sees half of a change.
        self.lock: threading.RLock = datapath.table_lock if datapath is not None else threading.RLock()
        self._on_apply = on_apply
        self._on_failure = on_failure
        self._telemetry = telemetry
        self._clock = clock
        self._applied_ns = 0
        self._applied_cond = threading.Condition()
        self.watcher = TableWatcher(
            kv,
            watch_prefixes(config.rdids),
            self.table,
            self._apply,
            lock=self.lock,
            page_size=config.page_size,
            backoff=config.backoff,
            progress_every=config.progress_every,
        )
        self.registration = HostRegistration(kv, config, self._applied, clock=clock)
        self.snapshots = TableSnapshots(Path(config.table_snapshot)) if config.table_snapshot else None
        self._snapshot_due = threading.Event()
        self._snapshot_change = self.table.change_revision if resumed is not None else -1
        self._resumed = resumed is not None
        self._stop = threading.Event()
        # Set (under ``lock``) when the datapath stops: a thread left behind by ``stop`` applies no
        # more changes to it.
        self._datapath_stopped = False
        self._threads: list[threading.Thread] = []
        self.failure: BaseException | None = None
        self.snapshot_failures = 0
        if telemetry is not None:
            from services.vswitch.telemetry import AgentProbes  # noqa: PLC0415 - see the import above

            telemetry.observe(
                AgentProbes(
                    revisions=lambda: (self.watcher.seen_revision, self.table.revision),
                    counters=datapath.counters if datapath is not None else None,
                )
            )

    def resume(self) -> None:
        """Start the datapath on the saved table, if there is one, without waiting for etcd (a restart
        then forwards at once). Called by ``start``; skipped when the service already did it
        (``resumed``). Idempotent."""
        if self._resumed or self.datapath is None:
            return
        self._resumed = True
        with self.lock:
            resume_forwarding(self.datapath, self.table, self.snapshots)
            self._snapshot_change = self.table.change_revision

    def start(self) -> None:
        self.resume()
        self._threads = [
            threading.Thread(
                target=self._run, args=(self.watcher.run, "the watch loop"), name="vswitch-watch", daemon=True
            ),
            threading.Thread(
                target=self._run,
                args=(self.registration.run, "the host registration"),
                name="vswitch-registration",
                daemon=True,
            ),
        ]
        if self.snapshots is not None:
            self._threads.append(
                threading.Thread(target=self._keep_snapshot, name="vswitch-snapshot", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self, *, datapath: bool = True) -> None:
        """Stop watching, save the table and unregister; the datapath stops last, so forwarding runs
        until the end. ``datapath=False`` leaves it running: the caller stops it (``stop_datapath``)
        after its own shutdown work, which then does not add to a restart's outage.

        Bounded by ``STOP_SECONDS`` even while etcd is down or hung (see there)."""
        deadline = time.monotonic() + STOP_SECONDS
        self._stop.set()
        self._snapshot_due.set()
        self.registration.notify()
        self.watcher.wake()
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        behind = [thread.name for thread in self._threads if thread.is_alive()]
        if behind:
            log.info(
                "stopping without the threads still waiting on etcd", extra={"threads": ",".join(behind)}
            )
        self.save_snapshot()
        self.registration.unregister(timeout=max(deadline - time.monotonic(), _REVOKE_MIN_SECONDS))
        if datapath:
            self.stop_datapath()

    def stop_datapath(self) -> None:
        if self.datapath is not None:
            with self.lock:
                self._datapath_stopped = True
            self.datapath.stop()

    def _keep_snapshot(self) -> None:
        """Save the table after changes, at most every ``snapshot_interval`` (stop saves the last one)."""
        while not self._stop.is_set():
            self._snapshot_due.wait()
            # Changes that arrive meanwhile go into the same save.
            if self._stop.wait(self.config.snapshot_interval):
                return
            self._snapshot_due.clear()
            self.save_snapshot()

    def save_snapshot(self) -> bool:
        """Write the applied table to the snapshot file now; whether it was written. A table that was
        never synced nor loaded is not saved (it would replace a good snapshot with nothing)."""
        if self.snapshots is None:
            return False
        with self.lock:
            revision, changed = self.table.revision, self.table.change_revision
            # Progress alone moves the revision: the saved entries are still right, at their revision.
            if revision == 0 or changed <= self._snapshot_change:
                return False
            entries = dict(self.table.entries())
        try:
            self.snapshots.save(revision, entries)
            self._snapshot_change = changed
        except OSError as error:
            # Not fatal: forwarding and the table are unaffected; only a restart would be slower.
            self.snapshot_failures += 1
            log.warning(
                "cannot save the table snapshot",
                extra={"path": str(self.snapshots.path), "error": str(error)},
            )
            return False
        return True

    def _run(self, loop: Callable[[threading.Event], None], what: str) -> None:
        try:
            loop(self._stop)
        except Exception as error:
            # A bug or an etcd that refuses the agent's user, not a lost etcd (that is retried): say so
            # and let the service stop rather than run on a frozen table, or unregistered.
            log.exception("%s failed", what)
            self.failure = error
            if self._on_failure is not None:
                self._on_failure(error)

    def _apply(self, table: RoutingTable, delta: TableDelta) -> None:
        telemetry = self._telemetry
        clock = self._clock
        with telemetry.applying(delta, table.change_revision, clock.time_ns) if telemetry else nullcontext():
            if self.datapath is not None and not self._datapath_stopped and (delta or delta.reset):
                self.datapath.apply(table, delta)
            if self._on_apply is not None:
                self._on_apply(table, delta)
        with self._applied_cond:
            self._applied_ns = clock.time_ns()
            self._applied_cond.notify_all()
        self.registration.notify()
        if self.snapshots is not None:
            self._snapshot_due.set()

    def _applied(self) -> tuple[int, int, int]:
        """The applied revision, when it was applied, and the revision of the newest table change."""
        with self._applied_cond:
            return self.table.revision, self._applied_ns, self.table.change_revision

    @property
    def applied_revision(self) -> int:
        return self.table.revision

    def wait_for_revision(self, revision: int, timeout: float) -> bool:
        """Block until the table has applied ``revision`` (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        with self._applied_cond:
            while self.table.revision < revision:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._applied_cond.wait(remaining)
        return True

    def status(self) -> vswitch_pb2.AgentStatus:
        with self.lock:
            counts = self.table.counts()
            revision = self.table.revision
        stats = self.watcher.stats
        return vswitch_pb2.AgentStatus(
            host_name=self.config.host_name,
            pa_ip=self.config.pa_ip,
            applied_revision=revision,
            connected=self.watcher.connected,
            datapath=self.datapath is not None,
            pa_mtu=self.config.pa_mtu,
            inner_mtu=self.config.inner_mtu,
            lookup_records=counts["record"],
            virtual_subnets=counts["subnet"],
            customer_routes=counts["route"],
            provider_addresses=counts["pa"],
            registered=self.registration.registered,
            syncs=stats.syncs,
            resets_after_compaction=stats.resets_after_compaction,
            stream_breaks=stats.stream_breaks,
            last_sync_seconds=stats.last_sync_seconds,
            last_sync_keys=stats.last_sync_keys,
            rejected_keys=stats.rejected_keys,
            routing_domains=counts["domain"],
            rdids=list(self.config.rdids),
        )

    def dump(self) -> vswitch_pb2.DumpTableResponse:
        response = vswitch_pb2.DumpTableResponse()
        with self.lock:
            response.applied_revision = self.table.revision
            for entry in self.table.entries().values():
                resource = entry.WhichOneof("resource")
                if resource == "routing_domain":
                    response.routing_domains.append(entry.routing_domain)
                elif resource == "virtual_subnet":
                    response.virtual_subnets.append(entry.virtual_subnet)
                elif resource == "provider_address":
                    response.provider_addresses.append(entry.provider_address)
                elif resource == "lookup_record":
                    response.lookup_records.append(entry.lookup_record)
                elif resource == "customer_route":
                    response.customer_routes.append(entry.customer_route)
        return response
