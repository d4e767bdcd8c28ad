"""EnableReplication validation: every bad field is reported, as a field violation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overland.v1 import replica_pb2
from services.replica.errors import InvalidReplicationSettings
from services.replica.settings import CompressionMode, InitialMethod, disk_format, validate_enable
from services.replica.vhd import DiskFormat


def _request(**settings: object) -> replica_pb2.EnableReplicationRequest:
    base: dict[str, object] = {"replica_server": "127.0.0.1:50051"}
    base.update(settings)
    return replica_pb2.EnableReplicationRequest(
        vm=replica_pb2.VirtualMachine(name="vm1", disks=[replica_pb2.VmDisk(name="d0", path="/x.vhd")]),
        settings=replica_pb2.ReplicationSettings(**base),  # type: ignore[arg-type]
    )


def _fields(request: replica_pb2.EnableReplicationRequest) -> set[str]:
    with pytest.raises(InvalidReplicationSettings) as info:
        validate_enable(request)
    return {v.field for v in info.value.violations}


def test_defaults() -> None:
    policy = validate_enable(_request())
    assert policy.frequency_seconds == 300
    assert policy.initial_method == InitialMethod.NETWORK
    assert policy.bandwidth_limit == 0
    assert policy.compression == CompressionMode.AUTO


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({"compression_mode": replica_pb2.COMPRESSION_OFF}, CompressionMode.OFF),
        ({"compression_mode": replica_pb2.COMPRESSION_ZSTD}, CompressionMode.ZSTD),
        ({"compression_mode": replica_pb2.COMPRESSION_AUTO, "compression": True}, CompressionMode.AUTO),
        # The deprecated flag: true asked for zstd; false cannot be told from unset, so it is AUTO.
        ({"compression": True}, CompressionMode.ZSTD),
        ({"compression": False}, CompressionMode.AUTO),
    ],
)
def test_compression(settings: dict[str, object], mode: CompressionMode) -> None:
    assert validate_enable(_request(**settings)).compression == mode


def test_unknown_compression_is_refused() -> None:
    assert _fields(_request(compression_mode=7)) == {"settings.compression_mode"}


@given(st.integers(0, 100_000))
def test_frequency(value: int) -> None:
    if value in (0, 30, 300, 900):
        assert validate_enable(_request(frequency_seconds=value)).frequency_seconds == (value or 300)
    else:
        assert _fields(_request(frequency_seconds=value)) == {"settings.frequency_seconds"}


@given(st.integers(0, 1000))
def test_additional_points(value: int) -> None:
    if value <= 24:
        assert validate_enable(_request(additional_recovery_points=value)).additional_recovery_points == value
    else:
        assert _fields(_request(additional_recovery_points=value)) == {"settings.additional_recovery_points"}


def test_every_bad_field_at_once() -> None:
    request = _request(frequency_seconds=31, replica_server="nohost", bandwidth_limit_bytes_per_second=10)
    request.vm.name = "../etc"
    request.vm.disks.add(name="d0", path="")
    assert _fields(request) == {
        "vm.name",
        "vm.disks[1].name",
        "vm.disks[1].path",
        "settings.frequency_seconds",
        "settings.replica_server",
        "settings.bandwidth_limit_bytes_per_second",
    }


def test_external_media_needs_an_export_path() -> None:
    assert _fields(_request(initial_method=2)) == {"settings.export_path"}
    assert _fields(_request(export_path="/tmp/x")) == {"settings.export_path"}
    assert validate_enable(_request(initial_method=2, export_path="/tmp/x")).export_path == "/tmp/x"


def test_no_disks() -> None:
    request = _request()
    del request.vm.disks[:]
    assert _fields(request) == {"vm.disks"}


@given(st.integers(0, 100))
def test_disk_format_is_vhd_unless_raw_is_asked_for(value: int) -> None:
    request = _request()
    request.vm.disks[0].format = value  # type: ignore[assignment]
    if value in (
        replica_pb2.DISK_FORMAT_UNSPECIFIED,
        replica_pb2.DISK_FORMAT_VHD,
        replica_pb2.DISK_FORMAT_RAW,
    ):
        validate_enable(request)
        assert disk_format(request.vm.disks[0]) is (DiskFormat.RAW if value == 2 else DiskFormat.VHD)
    else:
        assert _fields(request) == {"vm.disks[0].format"}
