"""What the overlay tests share: the whole demo cluster (etcd, the policy service, agent processes in
host namespaces) as a context manager, a tshark capture of a host's NVGRE frames, and tshark's fields
of a capture."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from overland.v1 import policy_pb2_grpc
from services.common.config import EtcdConfig, ServerConfig
from services.common.etcd_process import EtcdProcess
from services.policy import PolicyConfig, create_server
from services.vswitch import netns
from services.vswitch.demo import OverlayDemo
from tests.conftest import start_test_etcd


@contextmanager
def overlay_cluster(workdir: Path, **demo_options: Any) -> Iterator[tuple[OverlayDemo, EtcdProcess]]:
    """etcd, the policy service on it and a started ``OverlayDemo(**demo_options)``; all stopped after."""
    etcd = start_test_etcd(workdir / "etcd")
    policy_server = None
    channel = None
    demo = None
    try:
        policy_server, port = create_server(
            PolicyConfig(
                server=ServerConfig(bind="127.0.0.1:0", max_workers=8),
                etcd=EtcdConfig(endpoints=(etcd.endpoint,), timeout=2.0),
            )
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        demo = OverlayDemo(
            policy_pb2_grpc.PolicyServiceStub(channel),
            etcd.endpoint,
            workdir,
            policy_endpoint=f"127.0.0.1:{port}",
            **demo_options,
        )
        demo.start()
        yield demo, etcd
    finally:
        if demo is not None:
            demo.close()
        if channel is not None:
            channel.close()
        if policy_server is not None:
            policy_server.stop()
        etcd.close()


@contextmanager
def nvgre_capture(namespace: str, pcap: Path, seconds: int = 300) -> Iterator[None]:
    """tshark on the PA link (``pa0``) of host ``namespace``, writing its NVGRE frames (IP protocol 47)
    to ``pcap`` while the block runs: it captures when the block starts, and has written what the
    block caused when it ends."""
    argv = ["tshark", "-i", "pa0", "-w", str(pcap), "-f", "ip proto 47", "-a", f"duration:{seconds}"]
    capture = subprocess.Popen(
        netns.exec_argv(namespace, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert capture.stderr is not None
        # tshark says so on stderr once it captures; on a loaded machine that takes seconds.
        for line in capture.stderr:
            if "Capturing on" in line:
                break
        yield
        # The last frames the block caused reach the file before tshark stops.
        time.sleep(0.5)
    finally:
        capture.send_signal(signal.SIGINT)
        capture.communicate(timeout=60)


def tshark_fields(path: Path, fields: list[str]) -> list[dict[str, str]]:
    """One dict per packet; repeated fields (outer and inner ``ip.src``) joined with ``;``."""
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "aggregator=;"]
    for name in fields:
        argv += ["-e", name]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]
