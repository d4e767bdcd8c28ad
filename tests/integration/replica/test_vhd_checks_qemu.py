"""Every image Overland's checks accept, qemu reads the same way: ``qemu-img info`` reports the same
size and ``qemu-img compare`` finds Overland's reading of it identical. Images come from qemu-img and
from Overland, intact and damaged in the ways the checks tolerate (a torn or cut-off footer of a
dynamic disk, which the spec's footer copy covers); the checks refuse the damage qemu-img check finds."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.replica.vhd import VhdCorrupt, create_dynamic, create_fixed, open_disk
from services.replica.vhd.footer import ones_complement_checksum

pytestmark = pytest.mark.qemu
MIB = 1024 * 1024
SIZE = 6 * MIB


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


def qemu_made(subformat: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        done = run(
            "qemu-img", "create", "-q", "-f", "vpc", "-o", f"subformat={subformat}", str(path), str(SIZE)
        )
        assert done.returncode == 0, done.stderr
        return path

    return make


def overland_made(kind: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        return create_fixed(path, SIZE) if kind == "fixed" else create_dynamic(path, SIZE)

    return make


MAKERS = {
    "qemu dynamic": qemu_made("dynamic"),
    "qemu fixed": qemu_made("fixed"),
    "overland dynamic": overland_made("dynamic"),
    "overland fixed": overland_made("fixed"),
}


def written(make: Callable[[Path], Path], path: Path, writes: list[tuple[int, int]]) -> Path:
    make(path)
    commands = [
        arg
        for offset, length in writes
        for arg in ("-c", f"write -P 0x{offset % 251 + 1:02x} {offset} {length}")
    ]
    done = run("qemu-io", "-f", "vpc", *commands, str(path))
    assert done.returncode == 0, done.stderr
    return path


def assert_qemu_agrees(path: Path, tmp: Path) -> None:
    """Overland accepts ``path``; qemu reports its size and reads its bytes the same."""
    disk = open_disk(path)
    try:
        dump = tmp / f"{path.name}.raw"
        dump.write_bytes(disk.read(0, disk.virtual_size))
        size = disk.virtual_size
    finally:
        disk.close()
    details = run("qemu-img", "info", "-f", "vpc", "--output=json", str(path))
    assert details.returncode == 0, details.stderr
    assert json.loads(details.stdout)["virtual-size"] == size
    same = run("qemu-img", "compare", "-f", "vpc", "-F", "raw", str(path), str(dump))
    assert same.returncode == 0, same.stdout + same.stderr


writes = st.lists(
    st.tuples(
        st.integers(0, SIZE // 512 - 1).map(lambda s: s * 512), st.integers(1, 256).map(lambda n: n * 512)
    ).map(lambda w: (w[0], min(w[1], SIZE - w[0]))),
    min_size=1,
    max_size=6,
)
damage = st.sampled_from(["none", "torn footer", "footer cut off"])


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(maker=st.sampled_from(list(MAKERS)), ops=writes, harm=damage)
def test_accepted_images_read_the_same_in_qemu(
    maker: str, ops: list[tuple[int, int]], harm: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("image")
    path = written(MAKERS[maker], folder / "disk.vhd", ops)
    data = bytearray(path.read_bytes())
    if harm == "torn footer":
        data[-512 + 80] ^= 0xFF
    elif harm == "footer cut off":
        del data[-512:]
    path.write_bytes(bytes(data))
    if "fixed" in maker and harm != "none":
        # A fixed disk has no footer copy: its damaged footer leaves nothing to tell its size by.
        with pytest.raises(VhdCorrupt, match="footer"):
            open_disk(path)
        return
    assert_qemu_agrees(path, folder)


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [
        (1536, 0x7FFFFFF0, "BAT entry 0"),  # a block far past the end of the file
        (512 + 16 + 4, 0x7FFFFE00, "BAT"),  # the table past the end of the file
        (512 + 28, 0xFFFFFFFF, "dynamic header max table entries"),
        (512 + 32, 0x00300000, "dynamic header block size"),  # 3 MiB: not a power of two
    ],
)
def test_what_qemu_refuses_to_open_is_refused(offset: int, value: int, field: str, tmp_path: Path) -> None:
    path = written(MAKERS["qemu dynamic"], tmp_path / "disk.vhd", [(0, 4096), (3 * MIB, 4096)])
    data = bytearray(path.read_bytes())
    data[offset : offset + 4] = value.to_bytes(4, "big")
    if 512 <= offset < 1536:
        # Keep the header's checksum right, so the field itself is what is wrong.
        data[512 + 36 : 512 + 40] = bytes(4)
        data[512 + 36 : 512 + 40] = ones_complement_checksum(bytes(data[512:1536])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    qemu_view = run("qemu-img", "info", "-f", "vpc", str(path))
    assert qemu_view.returncode != 0, qemu_view.stdout
    with pytest.raises(VhdCorrupt) as refused:
        open_disk(path)
    assert refused.value.fault is not None
    assert refused.value.fault.field.startswith(field), refused.value.message
