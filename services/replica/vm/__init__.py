"""The VM runtime of a site (the "Hyper-V host" role) on qemu: VM hardware and its qemu command line,
the guest's kernel command line for its network settings, the guest image's scripts and initramfs,
VM disks, accelerator detection, and the process shell that starts and stops a VM.

The guest image itself is built by ``tools/build_guest.py`` (``make guest``); see docs/vm.md.
"""

from services.replica.vm.accel import ProbeKey, detect_accel, kvm_boots, kvm_opens
from services.replica.vm.console import (
    INITRAMFS_READY,
    NETWORK_UP,
    ROOT_READ_ONLY,
    WorkloadRecord,
    applied_addresses,
    lost_records,
    parse_workload_log,
    synced_records,
)
from services.replica.vm.disk import (
    FsckResult,
    check_filesystem,
    make_vm_disk,
    raw_copy,
    read_guest_file,
    replay_journal,
)
from services.replica.vm.errors import (
    GuestImageError,
    InvalidVmSpec,
    QemuFailed,
    QmpCommandFailed,
    VmAlreadyRunning,
    VmError,
    VmNotRunning,
    VmTimeout,
)
from services.replica.vm.initramfs import gzip_archive, module_file_name, module_order, newc_archive
from services.replica.vm.kernel import elf_notes, extract_vmlinux, has_pvh_entry
from services.replica.vm.network import (
    GuestNetwork,
    NicSettings,
    decode_network,
    encode_network,
    kernel_command_line,
)
from services.replica.vm.process import VmProcess, VmState, VmStatus
from services.replica.vm.qemu import (
    Accel,
    DgramBackend,
    Disk,
    Nic,
    NicBackend,
    StreamBackend,
    TapBackend,
    VmSpec,
    qemu_command,
)
from services.replica.vm.qmp import QmpClient
from services.replica.vm.scripts import (
    ECHO_PORT,
    WORKLOAD_LOG,
    ImageFile,
    Kind,
    initramfs_files,
    rootfs_files,
)

__all__ = [
    "ECHO_PORT",
    "INITRAMFS_READY",
    "NETWORK_UP",
    "ROOT_READ_ONLY",
    "WORKLOAD_LOG",
    "Accel",
    "DgramBackend",
    "Disk",
    "FsckResult",
    "GuestImageError",
    "GuestNetwork",
    "ImageFile",
    "InvalidVmSpec",
    "Kind",
    "Nic",
    "NicBackend",
    "NicSettings",
    "ProbeKey",
    "QemuFailed",
    "QmpClient",
    "QmpCommandFailed",
    "StreamBackend",
    "TapBackend",
    "VmAlreadyRunning",
    "VmError",
    "VmNotRunning",
    "VmProcess",
    "VmSpec",
    "VmState",
    "VmStatus",
    "VmTimeout",
    "WorkloadRecord",
    "applied_addresses",
    "check_filesystem",
    "decode_network",
    "detect_accel",
    "elf_notes",
    "encode_network",
    "extract_vmlinux",
    "gzip_archive",
    "has_pvh_entry",
    "initramfs_files",
    "kernel_command_line",
    "kvm_boots",
    "kvm_opens",
    "lost_records",
    "make_vm_disk",
    "module_file_name",
    "module_order",
    "newc_archive",
    "parse_workload_log",
    "qemu_command",
    "raw_copy",
    "read_guest_file",
    "replay_journal",
    "rootfs_files",
    "synced_records",
]
