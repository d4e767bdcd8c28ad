"""The datapath on real namespaces: two hosts (PAs 198.18.0.x), VMs behind TAPs, NVGRE on raw sockets.

Two tenants reuse 192.0.2.0/24; blue has a second subnet 198.51.100.0/24 routed by the distributed
router. Checks ping inside a tenant, isolation across tenants, routing, ICMP fragmentation needed,
garbage and spoofed frames from the wire and from a VM port, and a tshark-decoded capture of the
wire traffic.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overland.v1 import vswitch_pb2
from services.common.schema import key_of
from services.common.table import RoutingTable, TableChange
from services.vswitch import lab as lab_module
from services.vswitch import netns
from services.vswitch.datapath import DatapathConfig, NvgreSwitch, policy_port_name
from services.vswitch.lab import BLUE_A, RED_A, Lab, demo_entries, demo_vms, snapshot
from services.vswitch.packets import (
    ETHERTYPE_IPV4,
    LINKTYPE_RAW,
    PROTO_GRE,
    EthernetFrame,
    Ipv4Packet,
    echo_request,
    encapsulate,
    encode_ethernet,
    encode_icmp,
    encode_ipv4,
    flow_id,
    gre_header,
    ip_to_bytes,
    mac_to_bytes,
    pcap_file_header,
    pcap_record,
)
from tests.integration.vswitch.overlay import nvgre_capture, tshark_fields

pytestmark = pytest.mark.netns

PA1, PA2 = "198.18.0.1", "198.18.0.2"
VMS = demo_vms([PA1, PA2])


@dataclass
class Overlay:
    lab: Lab
    datapaths: dict[str, NvgreSwitch]
    table: RoutingTable

    def vm(self, name: str) -> lab_module.Vm:
        return self.lab.vms[name]

    def drops(self, pa: str) -> dict[str, int]:
        return dict(self.datapaths[pa].counters().drops)


@pytest.fixture(scope="module")
def overlay() -> Iterator[Overlay]:
    lab = Lab()
    datapaths: dict[str, NvgreSwitch] = {}
    try:
        hosts = {PA1: lab.add_host("h1", PA1), PA2: lab.add_host("h2", PA2)}
        table = RoutingTable()
        delta = table.reset(snapshot(demo_entries([PA1, PA2], list(VMS.values()))), revision=1)
        for pa, host in hosts.items():
            datapath = NvgreSwitch(DatapathConfig(pa_ip=pa, netns=host.netns))
            datapath.apply(table, delta)
            datapath.start()
            datapaths[pa] = datapath
        for spec in VMS.values():
            vm = lab.add_vm(spec.name, hosts[spec.pa])
            port = f"tap-{spec.name}"
            datapaths[spec.pa].attach_port(
                vswitch_pb2.Port(name=port, mac=spec.mac, vsid=spec.vsid, netns=vm.netns)
            )
            lab.configure_vm(vm, port, spec.cidr, spec.gateway)
        yield Overlay(lab, datapaths, table)
    finally:
        for datapath in datapaths.values():
            datapath.stop()
        lab.close()


def test_ping_inside_a_tenant_across_hosts(overlay: Overlay) -> None:
    before = overlay.datapaths[PA1].counters()
    assert overlay.lab.ping(overlay.vm("blue1"), "192.0.2.12", count=3)
    after = overlay.datapaths[PA1].counters()
    assert after.tx_packets >= before.tx_packets + 3
    assert after.arp_replies >= 1 or before.arp_replies >= 1


def test_tenants_are_isolated_even_on_the_same_address(overlay: Overlay) -> None:
    # red1 sits beside blue1 (192.0.2.11); its 192.0.2.11 is red2 on the other host.
    red1 = overlay.vm("red1")
    assert overlay.lab.ping(red1, "192.0.2.11", count=2)
    neighbours = overlay.lab.run(red1.netns, ["ip", "neigh", "show", "192.0.2.11"]).stdout
    assert VMS["red2"].mac in neighbours
    assert VMS["blue1"].mac not in neighbours
    # Red has no 198.51.100.0/24: blue's second subnet is unreachable from red.
    before = overlay.drops(PA1).get("no_route", 0)
    assert not overlay.lab.ping(red1, "198.51.100.13", count=1, wait=0.5)
    assert overlay.drops(PA1).get("no_route", 0) > before
    # A red address with no record is not answered (no ARP flooding into the overlay).
    before = overlay.drops(PA1).get("arp_unknown_target", 0)
    assert not overlay.lab.ping(red1, "192.0.2.99", count=1, wait=0.5)
    assert overlay.drops(PA1).get("arp_unknown_target", 0) > before


def test_distributed_router_between_subnets_of_one_tenant(overlay: Overlay) -> None:
    assert overlay.lab.ping(overlay.vm("blue1"), "198.51.100.13", count=3)
    ttl = overlay.lab.run(overlay.vm("blue1").netns, ["ping", "-n", "-c", "1", "-W", "1", "198.51.100.13"])
    # One routing hop: the reply's TTL is 64 - 1 as the VM sees it.
    assert "ttl=63" in ttl.stdout


def test_icmp_fragmentation_needed_reports_the_inner_mtu(overlay: Overlay) -> None:
    datapath = overlay.datapaths[PA1]
    inner_mtu = datapath.inner_mtu
    assert inner_mtu == 1500 - 42
    vm = overlay.vm("blue1")
    # Raise the VM's MTU past the overlay's so the kernel sends a frame that cannot be carried.
    netns.configure_link("tap-blue1", vm.netns, mtu=1500)
    try:
        before = datapath.counters().icmp_frag_needed
        big = overlay.lab.run(
            vm.netns, ["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", "1472", "192.0.2.12"]
        )
        assert big.returncode != 0
        assert datapath.counters().icmp_frag_needed > before
        route = overlay.lab.run(vm.netns, ["ip", "route", "get", "192.0.2.12"])
        assert f"mtu {inner_mtu}" in route.stdout
    finally:
        netns.configure_link("tap-blue1", vm.netns, mtu=inner_mtu)
        overlay.lab.run(vm.netns, ["ip", "route", "flush", "cache"])


def _send_raw_gre(overlay: Overlay, packets: list[bytes]) -> None:
    """Inject GRE payloads from host2's PA to host1's, as a misbehaving peer would."""

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTO_GRE) as sock:
            sock.bind((PA2, 0))
            for payload in packets:
                sock.sendto(payload, (PA1, 0))

    netns.run_in_netns(overlay.lab.hosts["h2"].netns, send)


def _inner_icmp(source_ca: str, destination_ca: str, source_mac: str, destination_mac: str) -> bytes:
    ip = encode_ipv4(
        Ipv4Packet(
            source=ip_to_bytes(source_ca),
            destination=ip_to_bytes(destination_ca),
            protocol=1,
            payload=encode_icmp(echo_request(7, 1, b"spoof")),
        )
    )
    return encode_ethernet(
        EthernetFrame(mac_to_bytes(destination_mac), mac_to_bytes(source_mac), ETHERTYPE_IPV4, ip)
    )


def _wait_for_drops(overlay: Overlay, pa: str, wanted: dict[str, int]) -> dict[str, int]:
    deadline = time.monotonic() + 5
    while True:
        drops = overlay.drops(pa)
        if (
            all(drops.get(reason, 0) >= count for reason, count in wanted.items())
            or time.monotonic() > deadline
        ):
            return drops


def test_garbage_and_spoofed_frames_from_the_wire_are_dropped_and_counted(overlay: Overlay) -> None:
    blue1 = VMS["blue1"]
    before = overlay.drops(PA1)
    good_inner = _inner_icmp("192.0.2.12", blue1.ca, VMS["blue2"].mac, blue1.mac)
    # blue3's CA claimed from host2 is right, but 192.0.2.99 has no record anywhere: spoofed.
    spoofed = gre_header(BLUE_A, 1) + _inner_icmp("192.0.2.99", blue1.ca, VMS["blue2"].mac, blue1.mac)
    # The record of 192.0.2.12 in blue says PA2; the frame claims VSID of red: wrong VSID for the port.
    wrong_vsid = gre_header(RED_A, 1) + good_inner
    tagged = gre_header(BLUE_A, 1) + good_inner[:12] + struct.pack("!HH", 0x8100, 5) + good_inner[12:]
    bad_flags = struct.pack("!HHI", 0xB000, 0x6558, BLUE_A << 8) + good_inner
    truncated = gre_header(BLUE_A, 1)[:5]
    garbage = bytes(range(256)) * 3
    _send_raw_gre(overlay, [spoofed, wrong_vsid, tagged, bad_flags, truncated, garbage])
    wanted = {"unknown_source_pa": 1, "wrong_vsid": 1, "vlan_tagged": 1, "bad_gre_flags": 1, "truncated": 1}
    drops = _wait_for_drops(overlay, PA1, {r: before.get(r, 0) + n for r, n in wanted.items()})
    for reason, count in wanted.items():
        assert drops.get(reason, 0) >= before.get(reason, 0) + count, reason
    assert sum(drops.values()) >= sum(before.values()) + 6
    # Still forwarding.
    assert overlay.lab.ping(overlay.vm("blue1"), "192.0.2.12", count=1)


def test_garbage_and_spoofed_frames_from_a_vm_port_are_dropped(overlay: Overlay) -> None:
    vm = overlay.vm("blue1")
    datapath = overlay.datapaths[PA1]
    before = overlay.drops(PA1)
    blue1 = VMS["blue1"]
    spoof_ip = _inner_icmp("192.0.2.77", "192.0.2.12", blue1.mac, VMS["blue2"].mac)
    spoof_mac = _inner_icmp(blue1.ca, "192.0.2.12", "02:00:00:00:99:99", VMS["blue2"].mac)
    tagged = spoof_ip[:12] + struct.pack("!HH", 0x8100, 5) + spoof_ip[12:]
    own = mac_to_bytes(VMS["blue2"].mac) + mac_to_bytes(blue1.mac)
    truncated_ip = own + b"\x08\x00" + b"\x45\x00\x00"
    garbage = own + b"\x08\x00" + bytes(range(46))
    frames = [spoof_ip, spoof_mac, tagged, truncated_ip, garbage, bytes(range(60))]

    def inject() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind(("tap-blue1", 0))
            for frame in frames:
                sock.send(frame)

    netns.run_in_netns(vm.netns, inject)
    wanted = {"source_ip_spoofed": 1, "source_mac_spoofed": 2, "vlan_tagged": 1, "truncated": 1}
    drops = _wait_for_drops(overlay, PA1, {r: before.get(r, 0) + n for r, n in wanted.items()})
    for reason, count in wanted.items():
        assert drops.get(reason, 0) >= before.get(reason, 0) + count, reason
    assert datapath.running
    assert overlay.lab.ping(vm, "192.0.2.12", count=1)


NVGRE_FIELDS = [
    "gre.key",
    "gre.proto",
    "gre.flags.key",
    "gre.flags.checksum",
    "ip.src",
    "ip.dst",
    "eth.src",
    "eth.dst",
    "icmp.type",
]


def test_capture_of_real_wire_traffic_decodes_as_nvgre_in_tshark(overlay: Overlay, tmp_path: Path) -> None:
    pcap = tmp_path / "wire.pcap"
    host = overlay.lab.hosts["h1"]
    with nvgre_capture(host.netns, pcap):
        assert overlay.lab.ping(overlay.vm("blue1"), "192.0.2.12", count=3)
    rows = tshark_fields(pcap, NVGRE_FIELDS)
    requests = [row for row in rows if row["icmp.type"] == "8"]
    assert requests, rows  # tshark may start recording a moment after it says so
    for row in requests:
        assert int(row["gre.key"], 16) >> 8 == BLUE_A
        assert int(row["gre.proto"], 16) == 0x6558
        assert (row["gre.flags.key"], row["gre.flags.checksum"]) in (("1", "0"), ("True", "False"))
        # Outer then inner addresses: PA1 -> PA2 carrying 192.0.2.11 -> 192.0.2.12 of blue.
        assert row["ip.src"] == f"{PA1};192.0.2.11"
        assert row["ip.dst"] == f"{PA2};192.0.2.12"
        assert row["eth.src"].endswith(VMS["blue1"].mac)
        assert row["eth.dst"].endswith(VMS["blue2"].mac)
    replies = [row for row in rows if row["icmp.type"] == "0"]
    assert replies
    assert all(row["ip.src"] == f"{PA2};192.0.2.12" for row in replies)


def test_pcap_writer_output_decodes_in_tshark(tmp_path: Path) -> None:
    inner = _inner_icmp("192.0.2.11", "192.0.2.12", VMS["blue1"].mac, VMS["blue2"].mac)
    outer = encapsulate(ip_to_bytes(PA1), ip_to_bytes(PA2), BLUE_A, inner)
    path = tmp_path / "encoded.pcap"
    path.write_bytes(pcap_file_header(LINKTYPE_RAW) + pcap_record(time.time_ns(), outer))
    (row,) = tshark_fields(path, [*NVGRE_FIELDS, "ip.checksum.status"])
    assert int(row["gre.key"], 16) == BLUE_A << 8 | flow_id(inner)
    assert row["ip.src"] == f"{PA1};192.0.2.11"
    assert row["eth.dst"] == VMS["blue2"].mac
    assert row["icmp.type"] == "8"


def test_capture_and_filter_extensions_on_live_traffic(overlay: Overlay, tmp_path: Path) -> None:
    datapath = overlay.datapaths[PA1]
    capture = tmp_path / "ports.pcap"
    kind = vswitch_pb2.Extension.Kind
    datapath.configure_extension(
        vswitch_pb2.Extension(
            name="cap", kind=kind.KIND_CAPTURE, order=0, enabled=True, settings={"path": str(capture)}
        )
    )
    assert overlay.lab.ping(overlay.vm("blue1"), "192.0.2.12", count=2)
    deny = vswitch_pb2.Extension(
        name="no-icmp", kind=kind.KIND_FILTER, order=1, enabled=True, settings={"protocols": "icmp"}
    )
    datapath.configure_extension(deny)
    before = overlay.drops(PA1).get("extension", 0)
    try:
        assert not overlay.lab.ping(overlay.vm("blue1"), "192.0.2.12", count=1, wait=0.5)
        assert overlay.drops(PA1).get("extension", 0) > before
    finally:
        deny.enabled = False
        datapath.configure_extension(deny)
    assert overlay.lab.ping(overlay.vm("blue1"), "192.0.2.12", count=1)
    assert [e.name for e in datapath.extensions()] == ["cap", "no-icmp"]
    rows = tshark_fields(capture, ["eth.src", "ip.src", "ip.dst", "icmp.type"])
    requests = [r for r in rows if r["icmp.type"] == "8" and r["ip.dst"] == "192.0.2.12"]
    replies = [r for r in rows if r["icmp.type"] == "0" and r["ip.dst"] == "192.0.2.11"]
    assert len(requests) >= 2
    assert len(replies) >= 2


def test_policy_ports_follow_the_table(tmp_path: Path) -> None:
    """With policy_ports, each record on the host's PA becomes a TAP in the namespace its VM names."""
    with Lab() as lab:
        host = lab.add_host("h1", PA1)
        vm = lab.add_vm("blue1", host)
        spec = VMS["blue1"]
        entries = demo_entries([PA1, PA2], [spec])
        record = next(e for e in entries if e.WhichOneof("resource") == "lookup_record")
        record.lookup_record.vm_name = vm.netns
        table = RoutingTable()
        config = DatapathConfig(
            pa_ip=PA1, netns=host.netns, policy_ports=True, port_netns_template="{vm_name}"
        )
        datapath = NvgreSwitch(config)
        datapath.start()
        try:
            datapath.apply(table, table.reset(snapshot(entries), revision=1))
            name = policy_port_name(spec.vsid, spec.mac)
            (port,) = datapath.ports()
            assert (port.name, port.from_policy, port.ca, port.netns) == (name, True, spec.ca, vm.netns)
            assert netns.link_exists(name, vm.netns)
            assert netns.link_mtu(name, vm.netns) == 1458
            delta = table.update([TableChange(key_of(record), None, revision=2)])
            datapath.apply(table, delta)
            assert datapath.ports() == []
            assert not netns.link_exists(name, vm.netns)
        finally:
            datapath.stop()


def test_tcp_bulk_transfer_rides_tso_super_frames_with_valid_checksums(overlay: Overlay) -> None:
    """iperf3 moves 30 MB across the overlay; the receiver's kernel verifies every TCP checksum the
    switch completed, and the port counters show frames far above the MTU (TSO super-frames)."""
    datapath = overlay.datapaths[PA1]
    before = datapath.counters()
    server = subprocess.Popen(
        netns.exec_argv(overlay.vm("blue2").netns, ["iperf3", "-s", "-1", "-p", "5201"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        client = overlay.lab.run(
            overlay.vm("blue1").netns,
            ["iperf3", "-c", "192.0.2.12", "-p", "5201", "-n", "30M", "-J"],
            timeout=120,
        )
    finally:
        server.wait(timeout=60)
    report = json.loads(client.stdout)
    assert report["end"]["sum_sent"]["bytes"] >= 30 * 1024 * 1024
    # The server's last report may miss the final in-flight bytes.
    assert report["end"]["sum_received"]["bytes"] >= 25 * 1024 * 1024
    after = datapath.counters()
    frames = after.rx_packets - before.rx_packets
    assert (after.rx_bytes - before.rx_bytes) / frames > 1500
