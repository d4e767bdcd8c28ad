"""The tracking NBD export driven by the real clients: qemu-io and qemu-img over nbd://."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.replica.nbd import NbdServer
from services.replica.primary.tracking import ChangeLog, TrackedDevice
from services.replica.vhd import create_dynamic, create_fixed, open_disk

pytestmark = pytest.mark.qemu

MIB = 1024 * 1024
SIZE = 32 * MIB
TRACK = 64 * 1024


def qemu(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[NbdServer, TrackedDevice, Path]]:
    image = create_dynamic(tmp_path / "disk.vhd", SIZE)
    server = NbdServer(unix_path=tmp_path / "nbd.sock")
    device = TrackedDevice(
        open_disk(image, writable=True), ChangeLog.open(tmp_path / "disk.hrl", SIZE, TRACK)
    )
    server.add_export("disk0", device)
    server.start()
    try:
        yield server, device, image
    finally:
        server.stop()
        device.close()


def url(server: NbdServer) -> str:
    return f"nbd://127.0.0.1:{server.port}/disk0"


def tracked_blocks(device: TrackedDevice) -> set[int]:
    return {b for first, count in device.tracker.changed_runs() for b in range(first, first + count)}


def test_qemu_io_writes_are_read_back_and_tracked(served: tuple[NbdServer, TrackedDevice, Path]) -> None:
    server, device, image = served
    output = qemu(
        "qemu-io",
        "-f",
        "raw",
        url(server),
        "-c",
        "write -P 0xab 1M 64k",
        "-c",
        "write -P 0xcd 5M 3M",
        "-c",
        "write -z 20M 128k",
        "-c",
        "discard 24M 64k",
        "-c",
        "read -P 0xab 1M 64k",
        "-c",
        "read -P 0xcd 5M 3M",
        "-c",
        "read -P 0 20M 128k",
        "-c",
        "write -f -P 0x5f 12M 4k",
        "-c",
        "read -P 0x5f 12M 4k",
        "-c",
        "flush",
    )
    assert "Pattern verification failed" not in output
    assert tracked_blocks(device) == ({16} | set(range(80, 128)) | {192} | set(range(320, 322)) | {384})
    assert open_disk(image).read(5 * MIB, 3 * MIB) == b"\xcd" * 3 * MIB


def test_qemu_io_over_the_unix_socket(served: tuple[NbdServer, TrackedDevice, Path], tmp_path: Path) -> None:
    _server, device, _image = served
    qemu(
        "qemu-io",
        "-f",
        "raw",
        f"nbd+unix:///disk0?socket={tmp_path / 'nbd.sock'}",
        "-c",
        "write -P 0x11 0 4k",
        "-c",
        "read -P 0x11 0 4k",
    )
    assert tracked_blocks(device) == {0}


def test_qemu_img_convert_and_compare_against_nbd(
    served: tuple[NbdServer, TrackedDevice, Path], tmp_path: Path
) -> None:
    server, device, _image = served
    source = tmp_path / "source.vhd"
    create_fixed(source, SIZE)
    disk = open_disk(source, writable=True)
    disk.write(3 * MIB + 5, b"first" * 10000)
    disk.write(30 * MIB, b"\xfe" * MIB)
    disk.close()
    qemu("qemu-img", "convert", "-n", "-f", "vpc", "-O", "raw", str(source), url(server))
    qemu("qemu-img", "compare", "-f", "vpc", "-F", "raw", str(source), url(server))
    assert {3 * MIB // TRACK, 30 * MIB // TRACK} <= tracked_blocks(device)
    info = qemu("qemu-img", "info", url(server))
    assert f"({SIZE} bytes)" in info


def test_snapshot_during_qemu_writes_is_the_disk_at_the_cut(
    served: tuple[NbdServer, TrackedDevice, Path], tmp_path: Path
) -> None:
    server, device, _image = served
    qemu("qemu-io", "-f", "raw", url(server), "-c", "write -P 0x01 0 4M")
    snapshot = device.snapshot()
    at_cut = tmp_path / "at_cut.raw"
    at_cut.write_bytes(device.read(0, SIZE))
    qemu("qemu-io", "-f", "raw", url(server), "-c", "write -P 0x02 1M 2M", "-c", "write -P 0x03 10M 1M")
    assert snapshot.byte_ranges() == [(0, 4 * MIB)]
    assert snapshot.read(0, 4 * MIB) == at_cut.read_bytes()[: 4 * MIB]
    assert device.read(MIB, 4) == b"\x02" * 4
    snapshot.release(shipped=True)
    assert tracked_blocks(device) == set(range(16, 48)) | set(range(160, 176))


def raw_client(port: int, payload: bytes) -> bytes:
    """Read the greeting, send ``payload``, and collect what the server says until it hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        received = b""
        while len(received) < 18:
            received += client.recv(18 - len(received))
        try:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            while chunk := client.recv(65536):
                received += chunk
        except OSError:
            # The server closed with our garbage still unread: that is the clean disconnect we expect.
            pass
        return received


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\x00\x00\x03" + b"\xff" * 64,
        b"\x00\x00\x00\x03" + struct.pack(">QII", 0x49484156454F5054, 1, 5) + b"disk0" + b"garbage" * 10,
        b"\x00\x00\x00\x03"
        + struct.pack(">QII", 0x49484156454F5054, 1, 5)
        + b"disk0"
        + struct.pack(">IHHQQI", 0x25609513, 0, 1, 1, 0, 2**31),
        bytes(range(256)) * 40,
    ],
)
def test_garbage_clients_are_disconnected_and_the_server_keeps_serving(
    served: tuple[NbdServer, TrackedDevice, Path], payload: bytes
) -> None:
    server, _device, _image = served
    received = raw_client(server.port, payload)
    assert received.startswith(b"NBDMAGIC")
    qemu("qemu-io", "-f", "raw", url(server), "-c", "write -P 0x44 0 4k", "-c", "read -P 0x44 0 4k")


def test_out_of_range_requests_get_an_errno_not_a_crash(
    served: tuple[NbdServer, TrackedDevice, Path],
) -> None:
    server, _device, _image = served
    handshake = b"\x00\x00\x00\x03" + struct.pack(">QII", 0x49484156454F5054, 1, 5) + b"disk0"
    read_past_end = struct.pack(">IHHQQI", 0x25609513, 0, 0, 77, SIZE - 1, 2)
    bad_command = struct.pack(">IHHQQI", 0x25609513, 0, 42, 78, 0, 0)
    disconnect = struct.pack(">IHHQQI", 0x25609513, 0, 2, 79, 0, 0)
    received = raw_client(server.port, handshake + read_past_end + bad_command + disconnect)
    replies = received[18 + 10 :]
    assert struct.unpack(">IIQ", replies[:16]) == (0x67446698, 22, 77)
    assert struct.unpack(">IIQ", replies[16:32]) == (0x67446698, 22, 78)
    assert len(replies) == 32
