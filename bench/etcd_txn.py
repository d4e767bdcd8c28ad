"""Benchmark: EtcdKV.txn (protobuf requests built directly) against python3-etcd3's own
``transaction()`` helper, both writing 64-put transactions to the same real etcd in the same run.

Run: ``.venv/bin/python -m bench.etcd_txn [--txns N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import etcd3

from services.common.etcd_kv import EtcdKV
from services.common.etcd_process import EtcdProcess
from services.common.kv import Put

PUTS_PER_TXN = 64
VALUE = b"x" * 100


def _rate(label: str, txns: int, seconds: float) -> float:
    puts = txns * PUTS_PER_TXN / seconds
    print(f"  {label:<44} {txns / seconds:8.1f} txn/s  {puts:10.0f} puts/s")
    return puts


def bench_etcd_kv(kv: EtcdKV, txns: int, round_no: int) -> float:
    start = time.perf_counter()
    for t in range(txns):
        kv.txn([], [Put(f"/bench/kv/{round_no}/{t}/{i}".encode(), VALUE) for i in range(PUTS_PER_TXN)])
    return time.perf_counter() - start


def bench_library(client: etcd3.Etcd3Client, txns: int, round_no: int) -> float:
    start = time.perf_counter()
    for t in range(txns):
        client.transaction(
            compare=[],
            success=[
                client.transactions.put(f"/bench/lib/{round_no}/{t}/{i}", VALUE) for i in range(PUTS_PER_TXN)
            ],
            failure=[],
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--txns", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EtcdProcess(Path(tmp) / "etcd") as server:
        kv = EtcdKV(server.endpoint, timeout=5.0)
        host, port = server.endpoint.split(":")
        client = etcd3.client(host=host, port=int(port), timeout=5)
        print(
            f"etcd {server.endpoint}: {args.txns} transactions of {PUTS_PER_TXN} puts, best of {args.rounds}"
        )
        # Warm both connections up before timing.
        bench_etcd_kv(kv, 5, -1)
        bench_library(client, 5, -1)
        # Interleave the rounds so that disk and CPU noise hits both sides alike.
        ours, theirs = [], []
        for round_no in range(args.rounds):
            ours.append(bench_etcd_kv(kv, args.txns, round_no))
            theirs.append(bench_library(client, args.txns, round_no))
        baseline = _rate("baseline: etcd3 Etcd3Client.transaction()", args.txns, min(theirs))
        measured = _rate("EtcdKV.txn (raw etcdrpc TxnRequest)", args.txns, min(ours))
        print(f"  ratio EtcdKV / etcd3 helper: {measured / baseline:.2f}x")
        client.close()
        kv.close()


if __name__ == "__main__":
    main()
