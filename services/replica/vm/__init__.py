"""The VM runtime of a site (the "Hyper-V host" role) on qemu: ``VmHost`` (the site's VMs, served as
``VmService`` by ``VmServicer``), VM definitions and their checks, NIC ports, VM hardware and its qemu
command line, the guest's kernel command line for its network settings, the guest image's scripts
and initramfs, VM disks, accelerator detection, and the process shell that starts and stops a VM.

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
from services.replica.vm.definition import (
    NetworkSettings,
    NicDefinition,
    VmDefinition,
    port_name,
    validate_vm,
    vm_spec,
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
    GuestImageMissing,
    InvalidVmSpec,
    QemuFailed,
    QmpCommandFailed,
    VmAlreadyRunning,
    VmError,
    VmExists,
    VmInUse,
    VmLocked,
    VmNotFound,
    VmNotOff,
    VmNotRunning,
    VmTimeout,
)
from services.replica.vm.host import HostedVm, ReplicationMode, RunState, VmHost, guest_files
from services.replica.vm.initramfs import gzip_archive, module_file_name, module_order, newc_archive
from services.replica.vm.kernel import elf_notes, extract_vmlinux, has_pvh_entry
from services.replica.vm.network import (
    GuestNetwork,
    NicSettings,
    decode_network,
    encode_network,
    kernel_command_line,
)
from services.replica.vm.ports import AgentPorts, LocalTaps, PortFailed, PortRequest, Ports, site_ports
from services.replica.vm.process import ProcessIdentity, VmProcess, VmState, VmStatus, identity_of, parse_stat
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
from services.replica.vm.records import RunRecord, VmRecord
from services.replica.vm.scripts import (
    ECHO_PORT,
    WORKLOAD_LOG,
    ImageFile,
    Kind,
    initramfs_files,
    rootfs_files,
)
from services.replica.vm.servicer import VmServicer

__all__ = [
    "ECHO_PORT",
    "INITRAMFS_READY",
    "NETWORK_UP",
    "ROOT_READ_ONLY",
    "WORKLOAD_LOG",
    "Accel",
    "AgentPorts",
    "DgramBackend",
    "Disk",
    "FsckResult",
    "GuestImageError",
    "GuestImageMissing",
    "GuestNetwork",
    "HostedVm",
    "ImageFile",
    "InvalidVmSpec",
    "Kind",
    "LocalTaps",
    "NetworkSettings",
    "Nic",
    "NicBackend",
    "NicDefinition",
    "NicSettings",
    "PortFailed",
    "PortRequest",
    "Ports",
    "ProbeKey",
    "ProcessIdentity",
    "QemuFailed",
    "QmpClient",
    "QmpCommandFailed",
    "ReplicationMode",
    "RunRecord",
    "RunState",
    "StreamBackend",
    "TapBackend",
    "VmAlreadyRunning",
    "VmDefinition",
    "VmError",
    "VmExists",
    "VmHost",
    "VmInUse",
    "VmLocked",
    "VmNotFound",
    "VmNotOff",
    "VmNotRunning",
    "VmProcess",
    "VmRecord",
    "VmServicer",
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
    "guest_files",
    "gzip_archive",
    "has_pvh_entry",
    "identity_of",
    "initramfs_files",
    "kernel_command_line",
    "kvm_boots",
    "kvm_opens",
    "lost_records",
    "make_vm_disk",
    "module_file_name",
    "module_order",
    "newc_archive",
    "parse_stat",
    "parse_workload_log",
    "port_name",
    "qemu_command",
    "raw_copy",
    "read_guest_file",
    "replay_journal",
    "rootfs_files",
    "site_ports",
    "synced_records",
    "validate_vm",
    "vm_spec",
]
