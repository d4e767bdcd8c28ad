"""Choosing the accelerator: KVM where it really works, TCG otherwise; the answer is cached.

``/dev/kvm`` existing is not enough: in a nested VM, KVM opens fine and the guest then hangs in the
firmware ("Booting from ROM"). So the probe boots the real guest kernel and initramfs under KVM with
``overland.break=initramfs`` and takes KVM only if the initramfs reports ready in time (about a
second where KVM works). The answer is cached in a JSON file keyed by what decides it: the qemu
version, the host kernel, and whether ``/dev/kvm`` opens.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from services.replica.vm.console import INITRAMFS_READY
from services.replica.vm.errors import QemuFailed, VmNotRunning, VmTimeout
from services.replica.vm.network import GuestNetwork, kernel_command_line
from services.replica.vm.process import VmProcess
from services.replica.vm.qemu import QEMU_BINARY, Accel, VmSpec

KVM_DEVICE = Path("/dev/kvm")
# Where KVM works the probe is done in a second or two; a hang never ends, so this only bounds the
# wait (paid once per machine, then cached).
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class ProbeKey:
    """What the probe's answer depends on; a change of any of these probes again."""

    qemu_version: str
    host_kernel: str
    kvm_opens: bool


def kvm_opens(device: Path = KVM_DEVICE) -> bool:
    """Whether this process can open the KVM device read-write (it exists and we may use it)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def qemu_version(qemu: str = QEMU_BINARY) -> str:
    try:
        done = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        raise QemuFailed(f"{qemu} --version failed: {error}") from error
    return done.stdout.splitlines()[0].strip() if done.stdout else ""


def probe_key(qemu: str = QEMU_BINARY, device: Path = KVM_DEVICE) -> ProbeKey:
    return ProbeKey(qemu_version(qemu), os.uname().release, kvm_opens(device))


def read_cache(cache: Path, key: ProbeKey) -> Accel | None:
    """The cached answer for ``key``, or None when there is none (or it is for another key)."""
    try:
        data = json.loads(cache.read_text())
        if data.get("key") == asdict(key):
            return Accel(data["accel"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def write_cache(cache: Path, key: ProbeKey, accel: Accel) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    scratch = cache.with_name(f".{cache.name}.{os.getpid()}")
    scratch.write_text(json.dumps({"key": asdict(key), "accel": accel.value}, indent=2) + "\n")
    scratch.replace(cache)


def kvm_boots(kernel: Path, initrd: Path, *, qemu: str = QEMU_BINARY, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the guest kernel reaches its initramfs under KVM within ``timeout`` seconds."""
    spec = VmSpec(
        name="overland-kvm-probe",
        kernel=kernel,
        initrd=initrd,
        append=kernel_command_line(GuestNetwork(), break_at="initramfs"),
        memory_mib=128,
    )
    with tempfile.TemporaryDirectory(prefix="overland-kvm-probe-") as workdir:
        vm = VmProcess(spec, Path(workdir), Accel.KVM, qemu=qemu)
        try:
            vm.start()
            vm.wait_for_console(INITRAMFS_READY, timeout)
        except (QemuFailed, VmNotRunning, VmTimeout):
            return False
        finally:
            with contextlib.suppress(QemuFailed, VmNotRunning):
                vm.close()
    return True


def detect_accel(
    kernel: Path,
    initrd: Path,
    cache: Path,
    *,
    qemu: str = QEMU_BINARY,
    device: Path = KVM_DEVICE,
    timeout: float = PROBE_TIMEOUT,
) -> Accel:
    """KVM if it opens and boots the guest, else TCG; cached in ``cache`` per ``ProbeKey``."""
    key = probe_key(qemu, device)
    cached = read_cache(cache, key)
    if cached is not None:
        return cached
    works = key.kvm_opens and kvm_boots(kernel, initrd, qemu=qemu, timeout=timeout)
    accel = Accel.KVM if works else Accel.TCG
    write_cache(cache, key, accel)
    return accel
