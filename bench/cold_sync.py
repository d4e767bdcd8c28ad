"""Benchmark: an agent's cold sync of 100,000 lookup records from a real etcd, beside the raw paged range
read of the same keys in the same run.

The agent's sync is ``TableWatcher.sync``: paged range reads pinned to one revision, decoding every
StoreEntry, and ``RoutingTable.reset`` building the indexes. The baseline reads the same pages and keeps
the raw key-values, nothing else. Timing runs go without tracemalloc; a separate pass of each measures
the memory they hold afterwards (tracemalloc, bytes per record), and the RSS growth of the process is
printed too.

Run: ``.venv/bin/python -m bench.cold_sync [--records 100000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from overland.v1 import types_pb2
from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.common.kv import KeyValue, Put
from services.common.schema import key_of, keys, wrap
from services.common.table import RoutingTable
from services.vswitch.watcher import TableWatcher, watch_prefixes

PAGE_SIZE = 2000
# Tenant CAs may only come from these documentation ranges; each routing domain reuses them.
CA_BLOCKS = ("192.0.2", "198.51.100", "203.0.113")
HOSTS = 100


def _cas() -> list[str]:
    return [f"{block}.{host}" for block in CA_BLOCKS for host in range(1, 255)]


def table_entries(records: int) -> Iterator[types_pb2.StoreEntry]:
    """Provider addresses, then per routing domain a domain, a subnet and up to 762 records."""
    now = time.time_ns()
    for host in range(HOSTS):
        yield wrap(
            types_pb2.ProviderAddress(
                host_name=f"host-{host}", pa_ip=f"198.18.{host // 250}.{host % 250 + 1}", prefix_length=16
            ),
            now,
        )
    cas = _cas()
    written = 0
    domain_no = 0
    while written < records:
        rdid = f"00000000-0000-4000-8000-{domain_no:012x}"
        vsid = 5000 + domain_no
        yield wrap(types_pb2.RoutingDomain(rdid=rdid, tenant_name=f"tenant-{domain_no}"), now)
        yield wrap(
            types_pb2.VirtualSubnet(
                vsid=vsid, rdid=rdid, ca_prefixes=[f"{block}.0/24" for block in CA_BLOCKS]
            ),
            now,
        )
        for ca in cas[: records - written]:
            host = written % HOSTS
            mac = ":".join(
                f"{b:02x}" for b in (2, vsid >> 8 & 0xFF, vsid & 0xFF, *written.to_bytes(3, "big"))
            )
            yield wrap(
                types_pb2.LookupRecord(
                    ca=ca,
                    vsid=vsid,
                    rdid=rdid,
                    mac=mac,
                    pa=f"198.18.{host // 250}.{host % 250 + 1}",
                    vm_name=f"vm-{written}",
                    rule=types_pb2.LOOKUP_RULE_ENCAP,
                    type=types_pb2.LOOKUP_TYPE_STATIC,
                ),
                now,
            )
            written += 1
        domain_no += 1


def load(kv: EtcdKV, records: int) -> int:
    batch: list[Put] = []
    total = 0
    for entry in table_entries(records):
        batch.append(Put(key_of(entry), entry.SerializeToString()))
        if len(batch) == kv.max_txn_ops:
            kv.txn([], batch)
            total += len(batch)
            batch = []
    if batch:
        kv.txn([], batch)
        total += len(batch)
    return total


def raw_read(kv: EtcdKV) -> list[KeyValue]:
    """The baseline: the same paged reads pinned to one revision, keeping the raw key-values."""
    revision = 0
    kvs: list[KeyValue] = []
    for prefix in watch_prefixes():
        start: bytes | None = None
        while True:
            page = kv.range(prefix, start=start, limit=PAGE_SIZE, revision=revision)
            revision = revision or page.revision
            kvs.extend(page.kvs)
            if not page.more or not page.kvs:
                break
            start = page.kvs[-1].key + b"\0"
    return kvs


def agent_sync(kv: EtcdKV) -> RoutingTable:
    table = RoutingTable()
    TableWatcher(kv, watch_prefixes(), table, lambda _t, _d: None, page_size=PAGE_SIZE).sync()
    return table


def timed(run: Callable[[], object], rounds: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of this process) of each round; on a shared machine the CPU time is
    the steadier figure."""
    seconds = []
    for _ in range(rounds):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
        del result
    return seconds


def held_bytes(run: Callable[[], object]) -> int:
    """Bytes still allocated while the result of ``run`` is alive."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = run()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del result
    return after - before


def rss_growth_kib(run: Callable[[], object]) -> tuple[int, object]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EtcdProcess(Path(tmp) / "etcd", unsafe_no_fsync=True) as server,
    ):
        kv = EtcdKV(server.endpoint, timeout=30.0)
        started = time.perf_counter()
        keys_written = load(kv, args.records)
        elapsed = time.perf_counter() - started
        print(f"loaded {keys_written} keys ({args.records} lookup records) in {elapsed:.1f}s")
        # RSS first, in a fresh heap: the peak RSS only grows, so the agent sync goes first.
        rss_agent, table = rss_growth_kib(lambda: agent_sync(kv))
        assert isinstance(table, RoutingTable)
        assert table.count("record") == args.records, table.counts()
        assert set(table.entries()) >= {keys.pa_key("198.18.0.1")}
        del table
        raw_seconds = timed(lambda: raw_read(kv), args.rounds)
        agent_seconds = timed(lambda: agent_sync(kv), args.rounds)
        raw_bytes = held_bytes(lambda: raw_read(kv))
        agent_bytes = held_bytes(lambda: agent_sync(kv))
        kv.close()
    per = args.records
    load1, _, _ = os.getloadavg()
    print(
        f"cold sync of {args.records} records, page size {PAGE_SIZE}, {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, load average {load1:.1f}:"
    )
    for label, rounds, held, note in (
        ("baseline raw paged range read", raw_seconds, raw_bytes, "raw key-values"),
        ("agent sync (decode + indexes)", agent_seconds, agent_bytes, "RoutingTable, target < 5 s"),
    ):
        walls = [wall for wall, _ in rounds]
        cpus = [cpu for _, cpu in rounds]
        print(
            f"  {label}: wall best {min(walls):5.2f}s median {statistics.median(walls):5.2f}s, "
            f"CPU best {min(cpus):5.2f}s; {held / per:5.0f} B/record held ({note})"
        )
    print(f"  agent sync RSS growth (first sync, fresh heap): {rss_agent * 1024 / per:.0f} B/record")
    print(
        f"  agent / raw: wall {min(w for w, _ in agent_seconds) / min(w for w, _ in raw_seconds):.2f}x, "
        f"CPU {min(c for _, c in agent_seconds) / min(c for _, c in raw_seconds):.2f}x"
    )


if __name__ == "__main__":
    main()
