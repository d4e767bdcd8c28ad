"""The VM process shell on a real qemu, without waiting for a boot: every NIC backend and disk kind is
accepted by qemu, QMP answers, and start/stop misuse and failures are typed errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.replica.vm import (
    Accel,
    DgramBackend,
    Disk,
    GuestNetwork,
    Nic,
    QemuFailed,
    QmpCommandFailed,
    StreamBackend,
    VmAlreadyRunning,
    VmNotRunning,
    VmProcess,
    VmSpec,
    VmState,
    VmTimeout,
    kernel_command_line,
    make_vm_disk,
)
from tests.integration.vm.conftest import GuestImage

pytestmark = pytest.mark.qemu

MiB = 1024 * 1024


def paused_vm(guest_image: GuestImage, base: Path, **overrides: object) -> VmProcess:
    """A VM that qemu sets up but does not run (-S): nothing here waits for the guest."""
    values: dict[str, object] = {
        "name": "shell-test",
        "kernel": guest_image.kernel,
        "initrd": guest_image.initrd,
        "append": kernel_command_line(GuestNetwork()),
        "extra_args": ("-S",),
    }
    values.update(overrides)
    return VmProcess(VmSpec(**values), base / "vm", Accel.TCG)  # type: ignore[arg-type]


def test_qemu_takes_every_backend_and_disk_kind(guest_image: GuestImage, tmp_path: Path) -> None:
    switch = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    switch.bind(str(tmp_path / "switch.sock"))
    switch.listen()
    switch.settimeout(30)
    disks = tuple(
        Disk(str(make_vm_disk(guest_image.rootfs, tmp_path / f"d.{kind}", 32 * MiB, kind)), fmt)
        for kind, fmt in (("dynamic", "vpc"), ("fixed", "vpc"), ("raw", "raw"))
    )
    nics = (
        Nic("52:54:00:00:00:01", StreamBackend(str(tmp_path / "switch.sock"))),
        Nic("52:54:00:00:00:02", StreamBackend(str(tmp_path / "listen.sock"), server=True)),
        Nic("52:54:00:00:00:03", DgramBackend(str(tmp_path / "nic3.sock"), str(tmp_path / "peer3.sock"))),
    )
    with paused_vm(guest_image, tmp_path, disks=disks, nics=nics) as vm:
        vm.start()
        connection, _ = switch.accept()  # the stream client NIC connected to its switch port
        connection.close()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "listen.sock"))  # the stream server NIC listens
        assert (tmp_path / "nic3.sock").exists()
        blocks = vm.qmp().execute("query-block")
        assert [b["inserted"]["image"]["format"] for b in blocks] == ["vpc", "vpc", "raw"]
        assert [b["inserted"]["image"]["virtual-size"] for b in blocks] == [32 * MiB] * 3
        status = vm.status()
        assert status.state is VmState.PAUSED
        assert status.pid is not None
        assert vm.hard_stop() == 0
        assert vm.status().state is VmState.STOPPED
    switch.close()


def test_misuse_and_failures_are_typed_errors(guest_image: GuestImage, tmp_path: Path) -> None:
    vm = paused_vm(guest_image, tmp_path)
    with pytest.raises(VmNotRunning):
        vm.qmp()
    with vm:
        vm.start()
        with pytest.raises(VmAlreadyRunning):
            vm.start()
        with pytest.raises(QmpCommandFailed, match="CommandNotFound"):
            vm.qmp().execute("no-such-command")
        # A paused guest cannot answer the power button: the graceful stop times out, the VM stays.
        with pytest.raises(VmTimeout, match="did not power off"):
            vm.stop(timeout=1)
        assert vm.is_running()
        # kill -9: qemu dies by the signal.
        assert vm.kill() == -9
        with pytest.raises(VmNotRunning, match="exited"):
            vm.wait_for_console("never printed", timeout=5)
    missing = paused_vm(guest_image, tmp_path / "other", disks=(Disk(str(tmp_path / "nope.vhd"), "vpc"),))
    with pytest.raises(QemuFailed, match=r"nope\.vhd"):
        missing.start()
    assert not missing.is_running()
