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

from services.common.etcd_process import EtcdProcess
from services.vswitch import netns
from services.vswitch.demo import OverlayDemo, demo_cluster
from tests.conftest import start_test_etcd


@contextmanager
def overlay_cluster(workdir: Path, **demo_options: Any) -> Iterator[tuple[OverlayDemo, EtcdProcess]]:
    """etcd, the policy service on it and a started ``OverlayDemo(**demo_options)``; all stopped after."""
    etcd = start_test_etcd(workdir / "etcd")
    try:
        with demo_cluster(workdir, etcd, **demo_options) as demo:
            yield demo, etcd
    finally:
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
