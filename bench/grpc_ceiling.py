"""Benchmark baseline: how fast Python gRPC alone moves bytes from one process to another on loopback.

No disk, no hashing, no protobuf: a client streams raw 1 MiB messages (identity serializers) to a
sink in a child process, which only counts them. Anything that replicates over Python gRPC between
two processes on this machine is bounded by this, so the replica benchmark prints it beside ``cp``.
Run alone, it prints it beside the same bytes sent through a plain TCP socket.

Run: ``.venv/bin/python -m bench.grpc_ceiling [--gib 2]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import time
from collections.abc import Iterator, Sequence
from concurrent import futures

import grpc

MIB = 1024 * 1024
GIB = 1024 * MIB
MESSAGE_BYTES = MIB
_METHOD = "/bench.Sink/Swallow"
# Fresh interpreters: a forked child would inherit the parent's gRPC threads and state.
_SPAWN = multiprocessing.get_context("spawn")
_OPTIONS = [("grpc.max_receive_message_length", 64 * MIB), ("grpc.max_send_message_length", 64 * MIB)]


def _swallow(requests: Iterator[bytes], _context: grpc.ServicerContext) -> bytes:
    total = sum(len(message) for message in requests)
    return total.to_bytes(8, "big")


def _serve(ports: multiprocessing.Queue[int]) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=_OPTIONS)
    handler = grpc.stream_unary_rpc_method_handler(_swallow)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("bench.Sink", {"Swallow": handler})]
    )
    ports.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def measure(total_bytes: int) -> float:
    """Seconds to stream ``total_bytes`` of raw messages to a sink process and get its answer."""
    ports = _SPAWN.Queue()
    sink = _SPAWN.Process(target=_serve, args=(ports,), daemon=True)
    sink.start()
    try:
        port = ports.get(timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            call = channel.stream_unary(_METHOD, None, None)  # raw bytes both ways
            payload = os.urandom(MESSAGE_BYTES)
            count = total_bytes // MESSAGE_BYTES
            start = time.perf_counter()
            answer = call(iter([payload] * count), timeout=600)
            seconds = time.perf_counter() - start
        if int.from_bytes(answer, "big") != count * MESSAGE_BYTES:
            raise RuntimeError("the sink counted a different number of bytes")
        return seconds
    finally:
        sink.terminate()
        sink.join(timeout=30)


def _drain(ports: multiprocessing.Queue[int], counted: multiprocessing.Queue[int]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    ports.put(listener.getsockname()[1])
    connection, _ = listener.accept()
    buffer = bytearray(MESSAGE_BYTES)
    total = 0
    while n := connection.recv_into(buffer):
        total += n
    counted.put(total)


def measure_socket(total_bytes: int) -> float:
    """The baseline: the same bytes through a plain TCP socket to a child process."""
    ports, counted = _SPAWN.Queue(), _SPAWN.Queue()
    sink = _SPAWN.Process(target=_drain, args=(ports, counted), daemon=True)
    sink.start()
    try:
        payload = os.urandom(MESSAGE_BYTES)
        with socket.create_connection(("127.0.0.1", ports.get(timeout=60))) as connection:
            start = time.perf_counter()
            for _ in range(total_bytes // MESSAGE_BYTES):
                connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            if counted.get(timeout=600) != total_bytes:
                raise RuntimeError("the sink counted a different number of bytes")
            return time.perf_counter() - start
    finally:
        sink.join(timeout=30)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=2.0)
    args = parser.parse_args(argv)
    size = int(args.gib * GIB) // MESSAGE_BYTES * MESSAGE_BYTES
    baseline = measure_socket(size)
    seconds = measure(size)
    print(f"{size / MIB:.0f} MiB from one process to another on loopback, 1 MiB messages")
    print(f"  plain TCP socket (baseline)          {baseline:6.2f} s  {size / MIB / baseline:8.1f} MiB/s")
    print(
        f"  Python gRPC stream, raw bytes        {seconds:6.2f} s  {size / MIB / seconds:8.1f} MiB/s"
        f"  = {baseline / seconds:.0%} of the socket"
    )


if __name__ == "__main__":
    main()
