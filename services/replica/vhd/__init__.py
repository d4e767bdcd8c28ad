"""Replica storage: VHD images (fixed, dynamic, differencing) and raw files behind one ``BlockDevice``."""

from services.replica.vhd.check import DiskFormat
from services.replica.vhd.device import (
    DEFAULT_BLOCK_SIZE,
    BlockDevice,
    Buffer,
    FileDevice,
    check_range,
    merge_ranges,
)
from services.replica.vhd.dynamic import DEFAULT_VHD_BLOCK, DynamicHeader, ParentLocator
from services.replica.vhd.dynamic_disk import DynamicDisk
from services.replica.vhd.errors import (
    DeviceReadOnly,
    DiskLocked,
    Fault,
    StorageError,
    VhdCorrupt,
    VhdDamaged,
    VhdError,
    VhdInvalid,
    VhdParentError,
)
from services.replica.vhd.footer import DiskType, Footer, Geometry, chs_geometry
from services.replica.vhd.image import (
    create_differencing,
    create_dynamic,
    create_fixed,
    open_disk,
    open_over,
    read_footer,
)
from services.replica.vhd.vhdx import VhdxDisk

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_VHD_BLOCK",
    "BlockDevice",
    "Buffer",
    "DeviceReadOnly",
    "DiskFormat",
    "DiskLocked",
    "DiskType",
    "DynamicDisk",
    "DynamicHeader",
    "Fault",
    "FileDevice",
    "Footer",
    "Geometry",
    "ParentLocator",
    "StorageError",
    "VhdCorrupt",
    "VhdDamaged",
    "VhdError",
    "VhdInvalid",
    "VhdParentError",
    "VhdxDisk",
    "check_range",
    "chs_geometry",
    "create_differencing",
    "create_dynamic",
    "create_fixed",
    "merge_ranges",
    "open_disk",
    "open_over",
    "read_footer",
]
