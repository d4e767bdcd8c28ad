"""Benchmark: the NVGRE datapath's throughput between two VMs on two hosts, beside the bare veth.

For each PA MTU it builds a fresh lab (services.vswitch.lab): two host namespaces on a bridge, a VM
namespace on each; then for each datapath mode (TAPs without offload; TSO super-frames with the inner
checksums completed in the switch; TSO with partial checksums left to the receiver) it runs one
datapath process per host (``python -m services.vswitch.datapath`` on a static table) and measures:

- iperf3 TCP, one stream, VM to VM across the overlay, beside iperf3 TCP between the two host
  namespaces over the bare veth/bridge path (the baseline);
- small packets: iperf3 UDP with 64-byte payloads at full speed, packets per second that arrive,
  overlay beside bare path.

With ``--tracing`` every overlay mode is measured again with the datapaths' telemetry on (span file,
batch processor, counters exported as metrics every second) beside the same mode with it off.

Run as root: ``.venv/bin/python -m bench.throughput [--seconds 5] [--quick] [--tracing]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.vswitch.lab import Lab, Vm, demo_entries, demo_vms, dump_of
from services.vswitch.netns import exec_argv

PA1, PA2 = "198.18.0.1", "198.18.0.2"
# Datapath flags per mode: TAPs without offload, TSO with checksums completed, TSO with partial checksums.
MODES = {"no offload": ["--no-offload"], "TSO": [], "TSO, partial csum": ["--partial-checksums"]}
IPERF_PORT = "5201"


@dataclass(frozen=True)
class Result:
    label: str
    tcp_gbps: float
    udp_pps: float


def iperf(
    lab: Lab, server_ns: str, client_ns: str, address: str, *, extra: Sequence[str], seconds: int
) -> dict:
    """One iperf3 run; the JSON report of the client."""
    server = subprocess.Popen(
        exec_argv(server_ns, ["iperf3", "-s", "-1", "-p", IPERF_PORT]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        argv = ["iperf3", "-c", address, "-p", IPERF_PORT, "-t", str(seconds), "-J", *extra]
        result = lab.run(client_ns, argv, timeout=seconds + 30)
        report = json.loads(result.stdout or "{}")
        if "error" in report or not report:
            raise RuntimeError(f"iperf3 failed: {report.get('error', result.stderr)}")
        return report
    finally:
        server.wait(timeout=seconds + 30)


def tcp_gbps(report: dict) -> float:
    return report["end"]["sum_received"]["bits_per_second"] / 1e9


def udp_pps(report: dict, seconds: int) -> float:
    total = report["end"]["sum"]
    return (total["packets"] - total["lost_packets"]) / seconds


def measure(lab: Lab, server_ns: str, client_ns: str, address: str, *, seconds: int, label: str) -> Result:
    tcp = iperf(lab, server_ns, client_ns, address, extra=[], seconds=seconds)
    udp = iperf(lab, server_ns, client_ns, address, extra=["-u", "-l", "64", "-b", "0"], seconds=seconds)
    return Result(label, tcp_gbps(tcp), udp_pps(udp, seconds))


@contextmanager
def datapaths(
    lab: Lab, vms: dict[str, Vm], mode: str, workdir: Path, *, traced: bool = False
) -> Iterator[None]:
    """One datapath process per host, each on the same static table, with its VM's TAP; ``traced``
    turns their telemetry on (files in ``workdir``), else it is off whatever the environment says."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OVERLAND_SPAN", "OVERLAND_METRIC"))
    }
    if traced:
        env |= {
            "OVERLAND_SPAN_FILE": str(workdir / "spans.jsonl"),
            "OVERLAND_METRIC_FILE": str(workdir / "metrics.jsonl"),
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }
    specs = demo_vms([PA1, PA2])
    table = workdir / "table.bin"
    table.write_bytes(dump_of(demo_entries([PA1, PA2], list(specs.values()))).SerializeToString())
    processes = []
    try:
        for name, vm in vms.items():
            spec = specs[name]
            ready = workdir / f"{name}.ready"
            ready.unlink(missing_ok=True)
            argv = [
                sys.executable,
                "-m",
                "services.vswitch.datapath",
                "--pa-ip",
                spec.pa,
                "--table",
                str(table),
                "--port",
                f"tap-{name},{spec.mac},{spec.vsid},{vm.netns}",
                "--ready-file",
                str(ready),
            ]
            argv += MODES[mode]
            processes.append(
                subprocess.Popen(exec_argv(vm.host.netns, argv), stderr=subprocess.DEVNULL, env=env)
            )
            deadline = time.monotonic() + 30
            while not ready.exists():
                if time.monotonic() > deadline or processes[-1].poll() is not None:
                    raise RuntimeError(f"datapath for {name} did not start")
                time.sleep(0.1)
            lab.configure_vm(vm, f"tap-{name}", spec.cidr, spec.gateway)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


def run_configuration(pa_mtu: int, modes: Sequence[str], seconds: int, tracing: bool = False) -> list[Result]:
    """The bare path, then the overlay in each datapath mode (and with ``tracing`` each mode again with
    telemetry on), on one lab with this PA MTU."""
    with Lab(pa_mtu=pa_mtu) as lab, tempfile.TemporaryDirectory() as workdir:
        h1, h2 = lab.add_host("h1", PA1), lab.add_host("h2", PA2)
        vms = {"blue1": lab.add_vm("blue1", h1), "blue2": lab.add_vm("blue2", h2)}
        results = [measure(lab, h2.netns, h1.netns, PA2, seconds=seconds, label=f"bare veth, MTU {pa_mtu}")]
        for mode in modes:
            for traced in (False, True) if tracing else (False,):
                with datapaths(lab, vms, mode, Path(workdir), traced=traced):
                    if not lab.ping(vms["blue1"], "192.0.2.12", count=3):
                        raise RuntimeError("the overlay does not forward")
                    label = f"overlay, PA MTU {pa_mtu}, {mode}{', tracing on' if traced else ''}"
                    server, client = vms["blue2"].netns, vms["blue1"].netns
                    results.append(measure(lab, server, client, "192.0.2.12", seconds=seconds, label=label))
                for name, vm in vms.items():
                    # The next run opens its TAPs afresh (other flags, or the same): start from new devices.
                    lab.run(vm.netns, ["ip", "link", "del", f"tap-{name}"])
            if tracing and not (Path(workdir) / "metrics.jsonl").stat().st_size:
                raise RuntimeError("tracing on exported no metrics: the comparison would be meaningless")
        return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="only PA MTU 1500, TSO with complete checksums")
    parser.add_argument("--tracing", action="store_true", help="each overlay mode also with telemetry on")
    args = parser.parse_args(argv)
    plan = {1500: ["TSO"]} if args.quick else {1500: list(MODES), 9000: list(MODES)}
    print("| path | TCP 1 stream Gbit/s | vs bare | UDP 64 B pps | vs bare |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for pa_mtu, modes in plan.items():
        bare, *overlays = run_configuration(pa_mtu, modes, args.seconds, args.tracing)
        for result in (bare, *overlays):
            print(
                f"| {result.label} | {result.tcp_gbps:.2f} | {result.tcp_gbps / bare.tcp_gbps:.1%} "
                f"| {result.udp_pps:,.0f} | {result.udp_pps / bare.udp_pps:.1%} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
