"""Validation of EnableReplication requests: a proto in, a normalized value or field violations out
(pure, but for ``complete_vm``, which knows files by their identity)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import IntEnum

from overland.v1 import replica_pb2
from services.common.errors import FieldViolation
from services.replica.errors import InvalidReplicationSettings
from services.replica.vhd import DiskFormat

FREQUENCIES = (30, 300, 900)
DEFAULT_FREQUENCY = 300
MAX_ADDITIONAL_POINTS = 24
# Below this a 64 KiB block takes over a second; a limit that low is a typo, not a policy.
MIN_BANDWIDTH = 64 * 1024
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class CompressionMode(IntEnum):
    """Values of ``overland.v1.Compression`` (see ``codec.compression``)."""

    AUTO = 1
    OFF = 2
    ZSTD = 3


class InitialMethod(IntEnum):
    """Values of ``overland.v1.InitialReplicationMethod``."""

    NETWORK = 1
    EXTERNAL_MEDIA = 2
    EXISTING_COPY = 3


@dataclass(frozen=True)
class ReplicationPolicy:
    """The validated, defaulted settings of one VM's replication."""

    frequency_seconds: int
    additional_recovery_points: int
    compression: CompressionMode
    bandwidth_limit: int
    replica_server: str
    initial_method: InitialMethod
    export_path: str


def validate_name(value: str, field: str) -> list[FieldViolation]:
    """A VM or disk name: it becomes a directory name at the DR site, so it must be path-safe."""
    if not value:
        return [FieldViolation(field, "required")]
    if not NAME_PATTERN.match(value):
        return [
            FieldViolation(
                field, "1-63 characters of letters, digits, '.', '_' or '-', not starting with a symbol"
            )
        ]
    return []


def validate_endpoint(value: str, field: str) -> list[FieldViolation]:
    """host:port with a port in 1..65535."""
    if not value:
        return [FieldViolation(field, "required: the DR site's replica endpoint, host:port")]
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return [FieldViolation(field, f"must be host:port with a port in 1..65535, got {value!r}")]
    return []


# The API's DiskFormat values; UNSPECIFIED is VHD (a format is never guessed from the content).
DISK_FORMATS = {
    replica_pb2.DISK_FORMAT_UNSPECIFIED: DiskFormat.VHD,
    replica_pb2.DISK_FORMAT_VHD: DiskFormat.VHD,
    replica_pb2.DISK_FORMAT_RAW: DiskFormat.RAW,
}


def disk_format(disk: replica_pb2.VmDisk) -> DiskFormat:
    """How to open ``disk`` (its format was validated with the request)."""
    return DISK_FORMATS[disk.format]


def validate_disk_format(disk: replica_pb2.VmDisk, field: str) -> list[FieldViolation]:
    if disk.format not in DISK_FORMATS:
        return [FieldViolation(field, f"unknown disk format {disk.format}: VHD (the default) or RAW")]
    return []


def compression_mode(settings: replica_pb2.ReplicationSettings) -> int:
    """The requested compression: ``compression_mode``, else the deprecated ``compression`` flag (true
    meant zstd on every chunk), else AUTO. A client that sent ``compression: false`` to mean "none"
    gets AUTO, which sends incompressible data as it is."""
    if settings.compression_mode:
        return settings.compression_mode
    return CompressionMode.ZSTD if settings.compression else CompressionMode.AUTO


def validate_enable(request: replica_pb2.EnableReplicationRequest) -> ReplicationPolicy:
    """The request's policy, or ``InvalidReplicationSettings`` listing every bad field at once."""
    violations = validate_name(request.vm.name, "vm.name")
    if not request.vm.disks:
        violations.append(FieldViolation("vm.disks", "at least one disk is required"))
    seen: set[str] = set()
    for i, disk in enumerate(request.vm.disks):
        violations += validate_name(disk.name, f"vm.disks[{i}].name")
        if disk.name in seen:
            violations.append(FieldViolation(f"vm.disks[{i}].name", f"duplicate disk name {disk.name!r}"))
        seen.add(disk.name)
        if not disk.path:
            violations.append(FieldViolation(f"vm.disks[{i}].path", "required: the disk file at this site"))
        violations += validate_disk_format(disk, f"vm.disks[{i}].format")
    s = request.settings
    frequency = s.frequency_seconds or DEFAULT_FREQUENCY
    if frequency not in FREQUENCIES:
        violations.append(
            FieldViolation("settings.frequency_seconds", f"must be 30, 300 or 900 seconds, got {frequency}")
        )
    if s.additional_recovery_points > MAX_ADDITIONAL_POINTS:
        violations.append(
            FieldViolation(
                "settings.additional_recovery_points",
                f"must be 0..{MAX_ADDITIONAL_POINTS}, got {s.additional_recovery_points}",
            )
        )
    if 0 < s.bandwidth_limit_bytes_per_second < MIN_BANDWIDTH:
        violations.append(
            FieldViolation(
                "settings.bandwidth_limit_bytes_per_second",
                f"must be 0 (unlimited) or at least {MIN_BANDWIDTH} bytes/s",
            )
        )
    violations += validate_endpoint(s.replica_server, "settings.replica_server")
    compression = compression_mode(s)
    if compression not in CompressionMode.__members__.values():
        violations.append(FieldViolation("settings.compression_mode", f"unknown compression {compression}"))
    method = s.initial_method or InitialMethod.NETWORK
    if method not in InitialMethod.__members__.values():
        violations.append(FieldViolation("settings.initial_method", f"unknown method {method}"))
    elif method == InitialMethod.EXTERNAL_MEDIA and not s.export_path:
        violations.append(FieldViolation("settings.export_path", "required with EXTERNAL_MEDIA"))
    elif method != InitialMethod.EXTERNAL_MEDIA and s.export_path:
        violations.append(FieldViolation("settings.export_path", "only valid with EXTERNAL_MEDIA"))
    if violations:
        raise InvalidReplicationSettings(
            f"invalid replication settings for VM {request.vm.name!r}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations,
        )
    return ReplicationPolicy(
        frequency_seconds=frequency,
        additional_recovery_points=s.additional_recovery_points,
        compression=CompressionMode(compression),
        bandwidth_limit=s.bandwidth_limit_bytes_per_second,
        replica_server=s.replica_server,
        initial_method=InitialMethod(method),
        export_path=s.export_path,
    )


def _identity(path: str) -> tuple[int, int] | str:
    """A file's device and inode, or its absolute path when it does not exist."""
    try:
        status = os.stat(path)
    except OSError:
        return os.path.abspath(path)
    return status.st_dev, status.st_ino


def complete_vm(
    request: replica_pb2.EnableReplicationRequest, defined: replica_pb2.VirtualMachine | None
) -> replica_pb2.EnableReplicationRequest:
    """The request for a VM defined at this site (``defined``, the VM runtime's definition), completed
    from it: disks, NICs, CPUs and memory the request leaves out are the definition's, so the DR site
    receives the whole VM (its NICs' failover settings included). Disks the request does name must be
    exactly the definition's: the replica of a VM is the replica of the disks it runs on."""
    if defined is None:
        return request
    completed = replica_pb2.EnableReplicationRequest()
    completed.CopyFrom(request)
    vm = completed.vm
    if not vm.disks:
        vm.disks.extend(defined.disks)
    else:
        # Files compare by identity: a symlink or a hard link to the definition's file is that file.
        given = {(d.name, _identity(d.path), DISK_FORMATS.get(d.format)) for d in vm.disks}
        runs_on = {(d.name, _identity(d.path), DISK_FORMATS.get(d.format)) for d in defined.disks}
        if given != runs_on:
            listed = ", ".join(
                f"{d.name}={d.path} ({DISK_FORMATS.get(d.format)})"
                for d in sorted(defined.disks, key=lambda d: d.name)
            )
            message = f"VM {vm.name!r} runs at this site on disks {listed}: replicate those (or name none)"
            raise InvalidReplicationSettings(message, [FieldViolation("vm.disks", message)])
    if not vm.nics:
        vm.nics.extend(defined.nics)
    vm.cpu_count = vm.cpu_count or defined.cpu_count
    vm.memory_bytes = vm.memory_bytes or defined.memory_bytes
    return completed
