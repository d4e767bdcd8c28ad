"""Benchmark: the gRPC server designs considered for long-lived streams, on a bare echo service.

Each design serves a unary echo and a server stream that stays open, in a child process; the client
times ``--calls`` unary calls one after another with no stream open (the baseline) and with
``--streams`` open, and reads the server's thread count and resident memory from /proc:

- ``sync, 32 threads``: ``grpc.server`` on one pool of 32 threads, as the services were: each open
  stream holds a thread, so 32 of them leave none for unary calls (frozen: a call past 2 s);
- ``sync, 32 + stream slots``: the same server with a thread for each stream on top of the 32
  (services/common/server.py: what the services run);
- ``aio, sync unary``: ``grpc.aio.server``, streams as coroutines, the unary handler a plain function
  run on its migration thread pool, as the services' handlers would be without a rewrite;
- ``aio, async unary``: the same with a coroutine unary handler (every handler rewritten).

Run: ``.venv/bin/python -m bench.server_designs [--rounds 2] [--calls 2000] [--streams 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

_SPAWN = multiprocessing.get_context("spawn")
_SERVICE = "bench.Echo"
_UNARY = f"/{_SERVICE}/Unary"
_STREAM = f"/{_SERVICE}/Stream"
_UNARY_THREADS = 32


def _serve_sync(ports: multiprocessing.Queue[int], stream_slots: int) -> None:
    def unary(request: bytes, _context: grpc.ServicerContext) -> bytes:
        return request

    def stream(_request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        gone = threading.Event()
        context.add_callback(gone.set)
        gone.wait()
        yield b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=_UNARY_THREADS + stream_slots))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, handlers)])
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def _serve_aio(ports: multiprocessing.Queue[int], async_unary: bool) -> None:
    def unary(request: bytes, _context: Any) -> bytes:
        return request

    async def unary_coroutine(request: bytes, _context: Any) -> bytes:
        return request

    async def stream(_request: bytes, _context: Any) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    async def serve() -> None:
        server = grpc.aio.server(migration_thread_pool=futures.ThreadPoolExecutor(max_workers=_UNARY_THREADS))
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary_coroutine if async_unary else unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, handlers)])
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


DESIGNS: dict[str, tuple[Callable[..., None], tuple[Any, ...]]] = {
    "sync, 32 threads": (_serve_sync, (0,)),
    "sync, 32 + stream slots": (_serve_sync, (256,)),
    "aio, sync unary": (_serve_aio, (False,)),
    "aio, async unary": (_serve_aio, (True,)),
}


@dataclass(frozen=True)
class Sample:
    p50_ms: float
    p99_ms: float
    frozen: bool
    threads: int
    rss_kib: int


def _proc(pid: int) -> tuple[int, int]:
    """The threads and resident KiB of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return len(list(Path(f"/proc/{pid}/task").iterdir())), rss


def measure(design: str, streams: int, calls: int) -> Sample:
    target, args = DESIGNS[design]
    ports: multiprocessing.Queue[int] = _SPAWN.Queue()
    server = _SPAWN.Process(target=target, args=(ports, *args), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            unary = channel.unary_unary(_UNARY, request_serializer=None, response_deserializer=None)
            for _ in range(200):
                unary(b"x", timeout=5)
            assert server.pid is not None
            watch = channel.unary_stream(_STREAM, request_serializer=None, response_deserializer=None)
            open_calls = [watch(b"", timeout=600) for _ in range(streams)]
            time.sleep(1.0)
            seconds: list[float] = []
            frozen = False
            for _ in range(calls):
                start = time.perf_counter()
                try:
                    unary(b"x", timeout=2)
                except grpc.RpcError:
                    frozen = True
                    break
                seconds.append(time.perf_counter() - start)
            threads, rss = _proc(server.pid)
            for call in open_calls:
                call.cancel()
        seconds.sort()
        if not seconds:
            return Sample(0.0, 0.0, frozen, threads, rss)
        p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))]
        return Sample(1000 * seconds[len(seconds) // 2], 1000 * p99, frozen, threads, rss)
    finally:
        server.terminate()
        server.join(timeout=30)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=64)
    args = parser.parse_args(argv)
    samples: dict[tuple[str, int], list[Sample]] = {}
    for _ in range(args.rounds):
        for design in DESIGNS:
            for streams in (0, args.streams):
                samples.setdefault((design, streams), []).append(measure(design, streams, args.calls))
    print(f"echo service: {args.calls} unary calls one after another, median of {args.rounds} rounds")
    print(f"  {'design':26s} {'streams':>7s} {'p50':>9s} {'p99':>9s} {'threads':>8s} {'RSS':>9s}")
    for (design, streams), runs in samples.items():
        threads = max(r.threads for r in runs)
        rss = statistics.median(r.rss_kib for r in runs) / 1024
        if any(r.frozen for r in runs):
            print(f"  {design:26s} {streams:7d} {'frozen':>9s} {'':>9s} {threads:8d} {rss:7.1f}MiB")
            continue
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        print(f"  {design:26s} {streams:7d} {p50:7.2f}ms {p99:7.2f}ms {threads:8d} {rss:7.1f}MiB")


if __name__ == "__main__":
    main()
