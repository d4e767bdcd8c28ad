"""The replica VM at a DR site: its name, lock and definition, from what the replica store keeps.

Hyper-V shows a replica VM at the DR site, locked until a failover starts it; Overland defines it
from the primary's definition that every delta's header carries, on the replica disks.
"""

from __future__ import annotations

from pathlib import Path

from overland.v1 import replica_pb2
from services.replica.dr.store import VmStore

TEST_SUFFIX = " - Test"


def replica_lock(vm_name: str, primary: str) -> str:
    """Why a replica VM may not start."""
    return f"a replica of VM {vm_name!r} from site {primary!r}: fail it over to start it"


def replica_config(store: VmStore) -> replica_pb2.VirtualMachine:
    """The replica VM: the primary's definition of the VM, on the replica disks (in its disk order)."""
    config = replica_pb2.VirtualMachine.FromString(store.state.vm)
    config.name = store.vm_name
    order = [disk.name for disk in config.disks]
    order += [name for name in sorted(store.state.disk_sizes) if name not in order]
    del config.disks[:]
    for name in order:
        if name in store.state.disk_sizes:
            # A replica disk is a VHD, whatever the primary's disk is (the DR site makes it, or adopts
            # only a VHD).
            config.disks.add(
                name=name, path=str(store.layout.replica(name).resolve()), format=replica_pb2.DISK_FORMAT_VHD
            )
    return config


def with_disks(config: replica_pb2.VirtualMachine, paths: dict[str, Path]) -> replica_pb2.VirtualMachine:
    """``config`` with its disks at ``paths`` (by disk name)."""
    moved = replica_pb2.VirtualMachine()
    moved.CopyFrom(config)
    for disk in moved.disks:
        disk.path = str(paths[disk.name])
    return moved
