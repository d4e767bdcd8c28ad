"""Benchmark: an unplanned failover of a real VM, from the failover call to the first ping the VM
answers at the DR site, split into its steps; beside a baseline measured in the same run: the same
VM's plain start at its primary, from the StartVm call to its first answered ping.

The tenant network of the demo (etcd, the policy service, a vswitch agent per host namespace) and two
site processes: A on host 1 runs blue1 (a qemu guest under TCG, its disk a dynamic VHD served by A's
NBD export, its NIC a TAP_KERNEL port of host 1's agent) and replicates it to B on host 3. blue2, a
namespace on host 2, pings blue1 every 0.2 s (``ping -D``: the reply's own time stamp). A round
starts blue1 at A (the baseline), runs one cycle, kills A's qemu and A's site (SIGKILL), then calls
the unplanned failover at B and follows it: the failover's step spans (B's span file: the probe of
A, the point disks made, the records moved, the VM started), the agents of hosts 2 and 3 applying
the move (their apply spans), the guest's network up on B's console (read
through the VM API every 0.1 s) and the first reply. Each round is a new world.

Run: ``.venv/bin/python -m bench.failover_ping [--rounds N]`` (root, after ``make guest``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.guest_boot import guest_image, load
from bench.replica_common import SiteProcess, start_site, wait_replicating
from overland.replication import wait_cycle
from overland.traces import load_spans
from overland.v1 import replica_pb2
from services.common.etcd_process import EtcdProcess
from services.replica.vm import NETWORK_UP, make_vm_disk
from services.vswitch import netns
from services.vswitch.demo import PAS, OverlayDemo, demo_cluster
from services.vswitch.telemetry import APPLY_SPAN

MIB = 1024 * 1024
VM, PINGER = "blue1", "blue2"
PA1, PA2, PA3 = PAS
TIMEOUT = 180.0
REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")
STEPS = ("probe", "point_disks", "records_moved", "vm_started")


class Pinger:
    """``ping -D -i 0.2`` from a namespace; ``first_reply_after(t)``: the epoch time of the first reply
    stamped at or after ``t``."""

    def __init__(self, namespace: str, address: str):
        argv = netns.exec_argv(namespace, ["ping", "-n", "-D", "-i", "0.2", "-W", "1", address])
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.replies: list[float] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if match := REPLY.match(line):
                with self.changed:
                    self.replies.append(float(match.group(1)))
                    self.changed.notify_all()

    def first_reply_after(self, since: float) -> float:
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while True:
                later = [t for t in self.replies if t >= since]
                if later:
                    return later[0]
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("no ping reply")

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)


def wait_console(site: SiteProcess, text: str) -> float:
    """The epoch time at which ``text`` was first seen on the VM's console (polled every 0.1 s)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        log = site.vms.get_console_log(name=VM, max_bytes=1024 * 1024)
        if text in bytes(log.data).decode(errors="replace"):
            return time.time()
        time.sleep(0.1)
    raise TimeoutError(f"no {text!r} on the console")


def site_on(
    demo: OverlayDemo, pa: str, names: tuple[str, str], workdir: Path, image: dict[str, str]
) -> SiteProcess:
    """Site ``names[0]`` on host ``pa``, allowing ``names[1]`` to replicate to it."""
    name, other = names
    agent = demo.agent_of(pa)
    env = {**os.environ, "OVERLAND_SPAN_FILE": str(workdir / f"{name}-spans.jsonl")}
    args = [
        *("--site-name", name, "--state-dir", str(workdir / f"{name}-state"), "--tick", "0.2"),
        *("--allow", f"{other}={workdir / f'{name}-store'}", "--accel", "tcg"),
        *("--guest-image", str(Path(image["kernel"]).parent)),
        *("--vm-netns", agent.host.netns, "--vswitch-endpoint", f"127.0.0.1:{agent.relay.port}"),
        *("--host-name", agent.host.netns, "--policy-endpoint", demo.policy_endpoint),
    ]
    return start_site(args, workdir / f"{name}.log", env)


def failover_steps(span_files: list[Path], called: float, hosts: set[str]) -> dict[str, float]:
    """Seconds from the call to the end of each step of the unplanned failover (its spans), and to the
    last of the ``hosts``' agents applying the records it moved (their apply spans)."""
    spans = load_spans(span_files)
    (failover,) = [
        s
        for s in spans
        if s["name"] == "replica.failover"
        and s["attributes"].get("overland.failover.operation") == "unplanned failover"
    ]
    ends = {}
    for span in spans:
        step = span["name"].removeprefix("replica.failover.")
        if span.get("parent_span_id") == failover["span_id"] and step in STEPS:
            ends[step] = span["end"] / 1e9 - called
    ends["call returned"] = failover["end"] / 1e9 - called
    # The move's write carries no trace of its own: each host's first table change applied after the
    # move began is the move (nothing else writes the table meanwhile).
    (moved,) = [s for s in spans if s["name"] == "replica.failover.records_moved"]
    applied: dict[str, float] = {}
    for span in sorted(spans, key=lambda s: s["start"]):
        host = span["attributes"].get("overland.host")
        if span["name"] == APPLY_SPAN and host in hosts and span["start"] >= moved["start"]:
            applied.setdefault(host, span["end"] / 1e9 - called)
    ends["agents applied"] = max(applied.values()) if len(applied) == len(hosts) else float("nan")
    return ends


def one_round(workdir: Path, image: dict[str, str]) -> tuple[float, dict[str, float]]:
    """(seconds from StartVm at the primary to the first reply, each failover milestone in seconds
    from the failover call)."""
    # The agents (children of the demo) write their spans here; the sites each to a file of theirs.
    os.environ["OVERLAND_SPAN_FILE"] = str(workdir / "agent-spans.jsonl")
    with (
        EtcdProcess(workdir / "etcd", unsafe_no_fsync=True) as etcd,
        demo_cluster(workdir, etcd, external_vms=frozenset({VM})) as demo,
    ):
        a = site_on(demo, PA1, ("site-a", "site-b"), workdir, image)
        b = site_on(demo, PA3, ("site-b", "site-a"), workdir, image)
        pinger = Pinger(demo.lab.vms[PINGER].netns, demo.vms[VM].ca)
        try:
            blue1 = demo.vms[VM]
            disk = make_vm_disk(Path(image["rootfs"]), workdir / "blue1.vhd", 64 * MIB)
            nic = replica_pb2.VmNic(
                mac=blue1.mac, vsid=blue1.vsid, ca=blue1.ca, addresses=[blue1.cidr], gateway=blue1.gateway
            )
            a.vms.create_vm(name=VM, disks=[replica_pb2.VmDisk(name="d0", path=str(disk))], nics=[nic])
            settings = replica_pb2.ReplicationSettings(frequency_seconds=900, replica_server=b.endpoint)
            a.replicas.enable_replication(vm=replica_pb2.VirtualMachine(name=VM), settings=settings)
            wait_replicating(a.replica_stub, VM, TIMEOUT)

            started = time.time()
            a.vms.start_vm(name=VM)
            baseline = pinger.first_reply_after(started) - started
            wait_cycle(a.replicas, a.replicas.replicate_now(vm_name=VM))
            qemu = a.vms.get_vm(name=VM).pid
            os.kill(qemu, signal.SIGKILL)
            a.kill()

            called = time.time()
            b.replicas.start_vm_failover(vm_name=VM)
            guest_up = wait_console(b, NETWORK_UP)
            first_reply = pinger.first_reply_after(called)
            b.vms.stop_vm(name=VM, turn_off=True)
        finally:
            pinger.close()
            a.stop()
            b.stop()
        hosts = {demo.agent_of(pa).host.netns for pa in (PA2, PA3)}
    # The agents wrote their spans when they stopped, with the demo.
    milestones = failover_steps(
        [workdir / "site-b-spans.jsonl", workdir / "agent-spans.jsonl"], called, hosts
    )
    milestones["guest network up (console)"] = guest_up - called
    milestones["first answered ping"] = first_reply - called
    return baseline, milestones


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    image = guest_image()
    print(f"guest {image['key']}, TCG, {args.rounds} rounds, load {load()}")
    baselines: list[float] = []
    rounds: list[dict[str, float]] = []
    for number in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="overland-bench-failover-") as scratch:
            baseline, milestones = one_round(Path(scratch), image)
        baselines.append(baseline)
        rounds.append(milestones)
        shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(milestones.items(), key=lambda kv: kv[1]))
        print(
            f"  round {number + 1}: start at the primary to ping {baseline:.2f} s; failover: {shown}",
            flush=True,
        )
    print(f"\nmedian seconds from the call (load at the end {load()})")
    print("| milestone | median | range |")
    print("| --- | ---: | ---: |")
    for name in sorted(rounds[0], key=lambda k: statistics.median(r[k] for r in rounds)):
        values = [r[name] for r in rounds]
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")
    print(
        f"| baseline: StartVm at the primary to the first answered ping | {statistics.median(baselines):.2f} "
        f"| {min(baselines):.2f}-{max(baselines):.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
