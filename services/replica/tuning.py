"""Process tuning for bulk transfer: keep glibc from returning (and re-faulting) megabyte buffers.

Every delta chunk allocates a few 1 MiB buffers (read, protobuf, serialized message). By default
glibc serves such sizes with fresh ``mmap``s or trims them back to the kernel on free, so every chunk
pays hundreds of page faults; measured, that alone capped a chunk pipeline at ~150 MiB/s. Raising
the mmap and trim thresholds keeps the memory in the heap for reuse (about 5x faster).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
TOP_PAD_BYTES = 64 * 1024 * 1024


def tune_allocator() -> bool:
    """Apply the thresholds when the C library is glibc; returns whether it did."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    done = all(
        mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            (M_TOP_PAD, TOP_PAD_BYTES),
        )
    )
    if not done:
        log.warning("mallopt refused the allocator thresholds; bulk transfers will be slower")
    return done
