"""The VM runtime of a site (the "Hyper-V host" role) on qemu: so far the guest's kernel command line
for its network settings, the guest image's scripts and initramfs, and reading its console.

The guest image itself is built by ``tools/build_guest.py`` (``make guest``); see docs/vm.md.
"""

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
    "GuestImageError",
    "GuestNetwork",
    "ImageFile",
    "InvalidVmSpec",
    "Kind",
    "NicSettings",
    "QemuFailed",
    "QmpCommandFailed",
    "VmAlreadyRunning",
    "VmError",
    "VmNotRunning",
    "VmTimeout",
    "WorkloadRecord",
    "applied_addresses",
    "decode_network",
    "elf_notes",
    "encode_network",
    "extract_vmlinux",
    "gzip_archive",
    "has_pvh_entry",
    "initramfs_files",
    "kernel_command_line",
    "lost_records",
    "module_file_name",
    "module_order",
    "newc_archive",
    "parse_workload_log",
    "rootfs_files",
    "synced_records",
]
