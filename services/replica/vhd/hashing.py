"""Block digests (blake3) of a device, for resync and for initial replication from an existing copy."""

from __future__ import annotations

from collections.abc import Iterator

import blake3

from services.replica.vhd.device import BlockDevice

DIGEST_SIZE = 32


def block_digest(data: bytes) -> bytes:
    """The blake3 digest of one block's content."""
    return bytes(blake3.blake3(data).digest())


def block_digests(
    device: BlockDevice, block_size: int, first_block: int = 0, count: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """``(block_index, digest)`` for each block; the last block may be shorter than ``block_size``."""
    blocks = -(-device.virtual_size // block_size)
    last = blocks if count is None else min(blocks, first_block + count)
    for index in range(first_block, last):
        offset = index * block_size
        yield index, block_digest(device.read(offset, min(block_size, device.virtual_size - offset)))
