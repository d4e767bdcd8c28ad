"""Build Overland's guest image from Debian packages only, and skip the build when its inputs are unchanged.

From ``linux-image-amd64``, ``busybox-static`` and ``kmod`` (installed by ``make guest``), under
``.overland/guest/<key>/``:

- ``vmlinuz``: the Debian kernel, as installed in /boot, and ``vmlinux``, the same kernel uncompressed
  (an ELF with a PVH entry, which qemu boots without the firmware's loader and the decompression that
  take most of a TCG boot); ``kernel`` in the manifest names the one to boot;
- ``initrd.img``: busybox-static and the kernel modules for virtio disks and NICs, ext4 and the ACPI
  power button (with their dependencies, in the order ``modprobe --show-depends`` gives); its init
  mounts ``/dev/vda`` and switches root;
- ``rootfs/``: the root filesystem template (busybox, the guest's init, workload, echo server and
  shutdown scripts), which ``services.replica.vm.make_vm_disk`` puts into a VM disk.

``<key>`` is a hash of every input (the kernel, the modules, busybox and the generated files), and
``.overland/guest/current`` links to the newest build. The pure parts (scripts, module order, the
initramfs archive) live in ``services.replica.vm``. ``--json`` prints the paths; ``--disk PATH`` also
makes a VM disk from the template.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    # Run as a script (python tools/build_guest.py): the services package is the repository's.
    sys.path.insert(0, str(REPO))

from services.replica.vm import (  # noqa: E402 - after the path set-up above
    GuestImageError,
    ImageFile,
    Kind,
    extract_vmlinux,
    gzip_archive,
    has_pvh_entry,
    initramfs_files,
    make_vm_disk,
    module_file_name,
    module_order,
    newc_archive,
    rootfs_files,
)

GUEST_ROOT = REPO / ".overland" / "guest"
KERNEL_PACKAGE = "linux-image-amd64"
# virtio_pci finds the devices, virtio_blk and virtio_net drive them, ext4 is the root; button and
# evdev turn qemu's ACPI powerdown into the power-button event acpid acts on.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "button", "evdev")
# Bumped when the way the image is assembled changes in a way the hashed inputs do not show.
RECIPE_VERSION = "2"
COMMAND_TIMEOUT = 300.0


@dataclass
class GuestImage:
    """Where a built guest image is, and what went into it."""

    key: str
    kernel_release: str
    # What to boot: vmlinux when the kernel has a PVH entry, else the bzImage.
    kernel: str
    vmlinuz: str
    initrd: str
    rootfs: str
    modules: list[str]
    cached: bool = False
    seconds: float = 0.0


def run(argv: Sequence[str]) -> str:
    """A tool's stdout; a failure raises ``GuestImageError`` with its stderr."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GuestImageError(f"{argv[0]}: {error}") from error
    if done.returncode != 0:
        raise GuestImageError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def kernel_release() -> str:
    """The release of the kernel ``linux-image-amd64`` depends on (e.g. ``6.1.0-57-amd64``)."""
    depends = run(["dpkg-query", "-W", "-f=${Depends}", KERNEL_PACKAGE])
    match = re.search(r"linux-image-(\d\S*-amd64)", depends)
    if match is None:
        raise GuestImageError(f"{KERNEL_PACKAGE} depends on no kernel image: {depends!r} (run make guest)")
    return match.group(1)


def busybox_binary() -> Path:
    for line in run(["dpkg-query", "-L", "busybox-static"]).splitlines():
        if line.endswith("/bin/busybox"):
            return Path(line)
    raise GuestImageError("busybox-static installs no /bin/busybox")


def module_bytes(path: Path) -> bytes:
    """A module file's ELF object (decompressed when the distribution compresses modules)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        import zstandard  # noqa: PLC0415 - only for zstd-compressed modules

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if path.suffix == ".gz":
        import gzip  # noqa: PLC0415

        return gzip.decompress(data)
    return data


def rootfs_digest(files: Sequence[ImageFile]) -> str:
    hasher = hashlib.sha256()
    for file in files:
        header = (
            f"{file.path}\0{file.kind.value}\0{file.mode:o}\0{file.target}\0{file.device}\0{len(file.data)}\0"
        )
        hasher.update(header.encode())
        hasher.update(file.data)
    return hasher.hexdigest()


def write_tree(root: Path, files: Sequence[ImageFile]) -> None:
    """Write ``files`` under ``root`` (directories first, as ``with_directories`` orders them)."""
    for file in files:
        target = root / file.path
        if file.kind is Kind.DIRECTORY:
            target.mkdir(exist_ok=True)
        elif file.kind is Kind.SYMLINK:
            target.symlink_to(file.target)
            continue
        elif file.kind is Kind.FILE:
            target.write_bytes(file.data)
        else:
            raise GuestImageError(f"the root template cannot hold device {file.path}: devtmpfs provides it")
        os.chmod(target, file.mode)


def load_manifest(path: Path) -> GuestImage | None:
    """The image a build's manifest describes, or None if it is missing or from an older recipe."""
    try:
        return GuestImage(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def build(root: Path = GUEST_ROOT, force: bool = False) -> GuestImage:
    """Build the guest image under ``root`` (or find it built) and return where it is."""
    start = time.monotonic()
    release = kernel_release()
    vmlinuz = Path(f"/boot/vmlinuz-{release}")
    if not vmlinuz.is_file():
        raise GuestImageError(f"{vmlinuz} is missing: reinstall linux-image-{release}")
    busybox = busybox_binary()
    busybox_data = busybox.read_bytes()
    applets = run([str(busybox), "--list-full"]).split()
    show_depends = run(["modprobe", "-C", "/dev/null", "-S", release, "--show-depends", "-a", *MODULES])
    module_paths = module_order(show_depends)
    modules = [(module_file_name(p), module_bytes(Path(p))) for p in module_paths]
    initramfs = newc_archive(initramfs_files(busybox_data, applets, modules))
    rootfs = rootfs_files(busybox_data, applets)
    bzimage = vmlinuz.read_bytes()
    kernel_digest = hashlib.sha256(bzimage).hexdigest()
    key = hashlib.sha256(
        "\0".join(
            [RECIPE_VERSION, kernel_digest, hashlib.sha256(initramfs).hexdigest(), rootfs_digest(rootfs)]
        ).encode()
    ).hexdigest()[:16]
    image = GuestImage(
        key=key,
        kernel_release=release,
        kernel=str(root / key / "vmlinuz"),
        vmlinuz=str(root / key / "vmlinuz"),
        initrd=str(root / key / "initrd.img"),
        rootfs=str(root / key / "rootfs"),
        modules=[name for name, _ in modules],
    )
    final = root / key
    manifest = final / "manifest.json"
    cached = None if force else load_manifest(manifest)
    if cached is not None and cached.key == key:
        image.kernel = cached.kernel
        image.cached = True
    else:
        vmlinux = extract_vmlinux(bzimage)
        if vmlinux is not None and has_pvh_entry(vmlinux):
            image.kernel = str(final / "vmlinux")
        root.mkdir(parents=True, exist_ok=True)
        scratch = root / f".{key}.{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            shutil.copyfile(vmlinuz, scratch / "vmlinuz")
            if vmlinux is not None and image.kernel.endswith("vmlinux"):
                (scratch / "vmlinux").write_bytes(vmlinux)
            (scratch / "initrd.img").write_bytes(gzip_archive(initramfs))
            (scratch / "rootfs").mkdir()
            write_tree(scratch / "rootfs", rootfs)
            (scratch / "manifest.json").write_text(json.dumps(asdict(image), indent=2) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            scratch.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    # Older builds go: only the current one is ever used.
    for old in root.iterdir():
        if old.is_dir() and old.name != key and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    link = root / "current"
    if not link.is_symlink() or os.readlink(link) != key:
        temporary = root / f".current.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(key)
        temporary.replace(link)
    image.seconds = round(time.monotonic() - start, 2)
    return image


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--root", type=Path, default=GUEST_ROOT, help="where builds go (default: %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    parser.add_argument("--json", action="store_true", help="print the image's paths as JSON")
    parser.add_argument("--disk", type=Path, help="also make a VM disk from the template at this path")
    parser.add_argument("--disk-size-mib", type=int, default=64, help="its size (default %(default)s MiB)")
    parser.add_argument("--disk-kind", choices=("dynamic", "fixed", "raw"), default="dynamic")
    args = parser.parse_args(argv)
    try:
        image = build(args.root, args.force)
        if args.disk is not None:
            make_vm_disk(Path(image.rootfs), args.disk, args.disk_size_mib * 1024 * 1024, args.disk_kind)
    except (GuestImageError, OSError) as error:
        print(f"build_guest: {error}", file=sys.stderr)  # noqa: T201 - a CLI reports its failure
        return 1
    if args.json:
        print(json.dumps(asdict(image), indent=2))  # noqa: T201 - the JSON report is the CLI's output
    else:
        state = "cached" if image.cached else "built"
        print(f"guest image {image.key} ({image.kernel_release}) {state} in {image.seconds:.1f} s")  # noqa: T201
        print(f"  kernel {image.kernel}\n  initrd {image.initrd}\n  rootfs {image.rootfs}")  # noqa: T201
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
