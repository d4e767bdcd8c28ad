"""The DR site's storage of one VM's replica: stage a delta, commit it atomically, keep recovery points.

``VmStore`` is what the receiver talks to; it holds the VM's state and its lock, and hands each step
to the module that owns it: the files and ``state.json`` (``layout``), a delta arriving (``staging``),
its commit and redo (``journal``), and the recovery points (``points``).
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from overland.v1 import replica_pb2
from services.replica.codec.chunks import VERIFIED_CHECKSUMS, block_digests
from services.replica.disks import SiteDisks
from services.replica.dr import extent_log, point_disks, points, staging
from services.replica.dr.journal import Journal
from services.replica.dr.layout import Layout, Point, VmState
from services.replica.dr.point_disks import PointDisks
from services.replica.dr.staging import Staging
from services.replica.errors import DeltasRefused, IllegalFailover, ReplicaDiskMissing, UnknownVm
from services.replica.files import fsync_dir
from services.replica.vhd.image import open_disk

HASH_READ_BYTES = 4 * 1024 * 1024


class VmStore:
    """One VM's replica from one primary. Streams are serialized by ``lock``; commits, and what must
    not interleave with one (point disks, failover), by ``commit_lock``."""

    def __init__(
        self,
        root: Path,
        vm_name: str,
        fault_apply_delay: float = 0.0,
        clock: Callable[[], int] = time.time_ns,
        owner: SiteDisks | None = None,
    ):
        self.layout = Layout(root / vm_name)
        self.vm_name = vm_name
        self.lock = threading.Lock()
        self.commit_lock = threading.RLock()
        self.state = self.layout.load()
        self._clock = clock
        self._owner = owner
        self._journal = Journal(self.layout, vm_name, clock, fault_apply_delay)
        self._journal.recover(self.state)
        points.remove_unreferenced(self.layout, self.state)
        # The registered point disks, open through the site's disk owner (their VMs' exports).
        self.point_disks: dict[str, PointDisks] = {}
        for doc in self.state.point_disks:
            point = PointDisks.decode(doc)
            self.point_disks[point.tag] = point_disks.reopen(self.layout, self._disk_owner(), point)
        point_disks.remove_unregistered(self.layout, self.point_disks)
        # Exports a stopped process left behind (dr/export.py).
        shutil.rmtree(self.layout.exports, ignore_errors=True)

    @property
    def known(self) -> bool:
        return self.layout.known

    def receiver_state(self) -> replica_pb2.ReceiverState:
        staged = staging.staged_header(self.layout, self.state.committed)
        return replica_pb2.ReceiverState(
            vm_name=self.vm_name,
            committed_sequence=self.state.committed,
            staged_sequence=staged.sequence if staged else 0,
            staged_chunks=staging.staged_chunks(self.layout) if staged else 0,
            chunk_checksums=VERIFIED_CHECKSUMS,
        )

    def begin(self, header: replica_pb2.DeltaHeader) -> Staging:
        """Validate the header and open staging, resuming from ``header.resume_from`` when it matches."""
        self._check_accepting(header)
        return staging.begin(self.layout, self.state, header, self.commit)

    def _check_accepting(self, header: replica_pb2.DeltaHeader) -> None:
        if self.state.refusal:
            raise DeltasRefused(
                f"delta {header.sequence} of VM {self.vm_name!r} refused: {self.state.refusal}"
            )
        if header.full and self.point_disks:
            raise DeltasRefused(
                f"a full transfer of VM {self.vm_name!r} would replace the replica disks under its "
                f"{' and '.join(sorted(self.point_disks))} failover VM: end that first"
            )

    def discard_staging(self) -> None:
        staging.discard(self.layout)

    def commit(
        self, header: replica_pb2.DeltaHeader, count: int, staged: list[extent_log.RecordInfo] | None = None
    ) -> replica_pb2.DeltaAck:
        """Commit the staged delta (see ``journal``); ``staged`` is where its records sit, if known.
        The old bytes it overwrites go into every point disk first."""
        with self.commit_lock:
            # A failover may have begun while the delta streamed in: the staging waits for a cancel.
            self._check_accepting(header)
            devices = [point.devices() for point in self.point_disks.values()]
            return self._journal.commit(self.state, header, count, staged, devices)

    # ---- failover: point disks, refusal, adoption --------------------------------------------

    def _disk_owner(self) -> SiteDisks:
        if self._owner is None:
            raise ReplicaDiskMissing("this store has no disk owner: it cannot serve point disks")
        return self._owner

    def create_point_disks(self, tag: str, sequence: int, exports: dict[str, str]) -> PointDisks:
        """Disks reading as recovery point ``sequence`` (0: the latest), a differencing disk over each
        replica disk, served under ``exports`` (disk -> export name); registered under ``tag``."""
        with self.commit_lock:
            if tag in self.point_disks:
                raise IllegalFailover(f"VM {self.vm_name!r} already has {tag} point disks")
            sequence = sequence or self.state.committed
            point_disks.check_point(self.state, self.vm_name, sequence)
            point_disks.check_replica_disks(self.layout, self.state, self.vm_name)
            where = point_disks.folder(self.layout, tag)
            point = PointDisks(
                tag,
                sequence,
                {disk: (exports[disk], where / f"{disk}.vhd") for disk in self.state.disk_sizes},
            )
            point_disks.create(self.layout, self.state, self._disk_owner(), point)
            self.point_disks[tag] = point
            try:
                self._save_point_disks()
            except BaseException:
                self.drop_point_disks(tag)
                raise
            return point

    def drop_point_disks(self, tag: str) -> None:
        """Let go of point disks ``tag`` and delete them (their VM no longer holds them)."""
        with self.commit_lock:
            point = self.point_disks.pop(tag, None)
            if point is None:
                return
            self._save_point_disks()
            point_disks.release(self._disk_owner(), point)
            shutil.rmtree(point_disks.folder(self.layout, tag), ignore_errors=True)

    def complete_point_disks(self, tag: str) -> dict[str, Path]:
        """Merge point disks ``tag`` into the replica disks while their VM may run: each export is
        switched to its replica disk under the disk's lock. The other recovery points are dropped
        (their undo layers no longer lead from the replica to them). Returns the replica disks."""
        with self.commit_lock:
            self._journal.finish_previous()
            point = self.point_disks[tag]
            devices = point.devices()
            replicas = {disk: self.layout.replica(disk).resolve() for disk in devices}
            owner = self._disk_owner()
            for device in devices.values():
                device.track_writes()
            for disk, device in devices.items():
                replica = self.layout.open_replica(disk)
                try:
                    device.copy_into(replica, device.child.own_ranges())
                except BaseException:
                    replica.close()
                    raise
                export = point.disks[disk][0]
                owner.replace_file(
                    export, replicas[disk], replica, functools.partial(device.retire_into, replica)
                )
            self.point_disks.pop(tag)
            now = self._clock()
            for old in self.state.points:
                if old.undo:
                    (self.layout.points / old.undo).unlink(missing_ok=True)
            self.state.points = [Point(self.state.committed, now)]
            self._save_point_disks()
            point_disks.release(self._disk_owner(), point)
            shutil.rmtree(point_disks.folder(self.layout, tag), ignore_errors=True)
            return replicas

    def _save_point_disks(self) -> None:
        self.state.point_disks = [point.encode() for point in self.point_disks.values()]
        self.layout.save(self.state)

    def set_refusal(self, reason: str) -> None:
        """Refuse deltas from now on, saying ``reason`` ("": accept them again). The last commit's
        background half is finished first: the replica disks are closed (their writer's image lock
        let go), so another owner (a failover VM, a reversed replication) may open them."""
        with self.commit_lock:
            self._journal.finish_previous()
            self.state.refusal = reason
            self.layout.save(self.state)

    def adopt(
        self,
        sequence: int,
        disks: dict[str, Path],
        vm: replica_pb2.VirtualMachine,
        primary_endpoint: str,
    ) -> None:
        """Keep ``disks`` (a VM's disks at this site) as the replica at ``sequence``: a reversed
        replication continues from there, with no copy. Earlier state of this store goes."""
        with self.commit_lock:
            self._journal.finish_previous()
            if self.point_disks:
                raise ReplicaDiskMissing(
                    f"VM {self.vm_name!r} has point disks here: end their failover first"
                )
            links = {disk: self.layout.replica(disk) for disk in disks}
            for disk, link in links.items():
                if link.exists() and not link.is_symlink() and link.resolve() != disks[disk].resolve():
                    raise ReplicaDiskMissing(
                        f"the replica of VM {self.vm_name!r} has its own disk {link}, not {disks[disk]}: "
                        "nothing was changed"
                    )
            staging.discard(self.layout)
            self.layout.disks.mkdir(parents=True, exist_ok=True)
            for disk, link in links.items():
                if not (link.exists() and link.resolve() == disks[disk].resolve()):
                    link.unlink(missing_ok=True)
                    link.symlink_to(disks[disk].resolve())
            fsync_dir(self.layout.disks)
            sizes = {}
            for disk in disks:
                device = open_disk(self.layout.replica(disk))
                try:
                    sizes[disk] = device.virtual_size
                finally:
                    device.close()
            self.state = VmState(
                committed=sequence,
                disk_sizes=sizes,
                vm=vm.SerializeToString(),
                additional_points=self.state.additional_points,
                points=[Point(sequence, self._clock())],
                primary_endpoint=primary_endpoint,
                settings=self.state.settings,
            )
            self.layout.save(self.state)
            points.remove_unreferenced(self.layout, self.state)

    def recovery_points(self) -> list[replica_pb2.RecoveryPoint]:
        return points.listing(self.vm_name, self.state.points)

    def materialize(self, sequence: int, out_dir: Path) -> dict[str, Path]:
        """Copies of the disks as they were at recovery point ``sequence`` (for failover and tests)."""
        return points.materialize(self.layout, self.state, self.vm_name, sequence, out_dir)

    def block_hashes(self, disk: str, block_size: int) -> Iterator[replica_pb2.BlockHashes]:
        path = self.layout.replica(disk)
        if not path.exists():
            raise UnknownVm(f"no replica disk {disk!r} of VM {self.vm_name!r} at this site")
        device = open_disk(path)
        try:
            per_read = max(block_size, HASH_READ_BYTES // block_size * block_size)
            for offset in range(0, device.virtual_size, per_read):
                data = device.read(offset, min(per_read, device.virtual_size - offset))
                yield replica_pb2.BlockHashes(
                    first_block=offset // block_size, digests=block_digests(data, block_size)
                )
        finally:
            device.close()
