"""What the overlay tests share: the whole demo cluster (etcd, the policy service, agent processes in
host namespaces) as a context manager, and tshark's fields of a capture."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from overland.v1 import policy_pb2_grpc
from services.common.config import EtcdConfig, ServerConfig
from services.common.etcd_process import EtcdProcess
from services.policy import PolicyConfig, create_server
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
        demo = OverlayDemo(policy_pb2_grpc.PolicyServiceStub(channel), etcd.endpoint, workdir, **demo_options)
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


def tshark_fields(path: Path, fields: list[str]) -> list[dict[str, str]]:
    """One dict per packet; repeated fields (outer and inner ``ip.src``) joined with ``;``."""
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "aggregator=;"]
    for name in fields:
        argv += ["-e", name]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]
