"""Chunk compression (zstd) and how AUTO decides which chunks to compress. Pure but for the clock,
which the caller passes in.

OFF never compresses; ZSTD tries every chunk and keeps what shrank. AUTO compresses a chunk when both
hold:

- **it compresses**: a trial on a sample of the chunk (``SAMPLE_PIECES`` pieces spread over it) comes
  out below ``MAX_RATIO`` of its size;
- **compressing pays on this link**: compressing at C bytes/s to a ratio r then sending at S bytes/s
  beats sending raw when ``1/C + r/S < 1/S``, that is ``C * (1 - r) > S``. C and r come from the
  trial (or from the previous chunk's compression), S from the stream (``observe_send``: how long the
  transport took to take each message), capped by the bandwidth limit. On a fast link text goes raw
  (zstd compresses it at a few hundred MB/s, slower than loopback gRPC sends it); on a WAN it goes
  compressed.

While it compresses, each chunk's own compression is the next trial. While it does not, a trial that
says no makes the next chunks skip the trial (1, 2, 4, ... up to ``MAX_SKIP``), so incompressible
data costs one small trial every ``MAX_SKIP`` chunks: AUTO is never slower than OFF on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard

from services.replica.settings import CompressionMode
from services.replica.vhd.device import Buffer

ZSTD_LEVEL = 1
# A chunk that does not shrink below this much of its size goes raw: the DR site's decompression and
# the trial are not worth a few percent.
MAX_RATIO = 0.9
SAMPLE_PIECES = 4
SAMPLE_PIECE_BYTES = 8 * 1024
MAX_SKIP = 32
# Weight of the newest observation in the running rates.
SMOOTHING = 0.25


def sample(data: Buffer) -> Buffer:
    """``SAMPLE_PIECES`` pieces of ``data`` spread evenly over it; all of it when it is not bigger."""
    size = len(data)
    if size <= SAMPLE_PIECES * SAMPLE_PIECE_BYTES * 2:
        return data
    view = memoryview(data)
    step = (size - SAMPLE_PIECE_BYTES) // (SAMPLE_PIECES - 1)
    return b"".join(view[i * step : i * step + SAMPLE_PIECE_BYTES] for i in range(SAMPLE_PIECES))


def pays(compress_rate: float, ratio: float, link_rate: float | None) -> bool:
    """Whether compressing at ``compress_rate`` bytes/s to ``ratio`` beats sending raw at ``link_rate``.

    ``link_rate`` None (not measured yet) counts as slow: compress, as a WAN wants.
    """
    if ratio >= MAX_RATIO:
        return False
    return link_rate is None or compress_rate * (1 - ratio) > link_rate


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else old + SMOOTHING * (new - old)


@dataclass
class Compressor:
    """Compresses the chunks of one delta, in order: ``compress`` returns ``(payload, compressed)``."""

    mode: CompressionMode
    clock: Callable[[], float]
    # Bytes/s the link may carry at most (the bandwidth limit); 0 is unlimited.
    limit: float = 0.0
    level: int = ZSTD_LEVEL
    link_rate: float | None = None
    compress_rate: float | None = None
    compressing: bool = False
    skip: int = 0
    skip_left: int = 0
    trials: int = 0
    _zstd: zstandard.ZstdCompressor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._zstd = zstandard.ZstdCompressor(level=self.level)

    def observe_send(self, nbytes: int, seconds: float) -> None:
        """The transport took ``seconds`` to take a message of ``nbytes``."""
        if nbytes > 0 and seconds > 0:
            self.link_rate = _smooth(self.link_rate, nbytes / seconds)

    def effective_link_rate(self) -> float | None:
        if self.limit and (self.link_rate is None or self.limit < self.link_rate):
            return self.limit
        return self.link_rate

    def compress(self, data: Buffer) -> tuple[Buffer, bool]:
        if self.mode == CompressionMode.OFF or not len(data):
            return data, False
        if self.mode == CompressionMode.ZSTD:
            packed = self._zstd.compress(data)
            return (packed, True) if len(packed) < len(data) else (data, False)
        if self.compressing:
            packed, ratio = self._timed(data)
            self.compressing = self._pays(ratio)
            if not self.compressing:
                self._back_off()
            return (packed, True) if len(packed) < len(data) else (data, False)
        if self.skip_left:
            self.skip_left -= 1
            return data, False
        self.trials += 1
        piece = sample(data)
        packed, ratio = self._timed(piece)
        if not self._pays(ratio):
            self._back_off()
            return data, False
        self.compressing, self.skip = True, 0
        if piece is data:
            return packed, True
        packed, ratio = self._timed(data)
        return (packed, True) if ratio < 1 else (data, False)

    def _timed(self, data: Buffer) -> tuple[bytes, float]:
        start = self.clock()
        packed = self._zstd.compress(data)
        seconds = self.clock() - start
        if seconds > 0:
            self.compress_rate = _smooth(self.compress_rate, len(data) / seconds)
        return packed, len(packed) / len(data)

    def _pays(self, ratio: float) -> bool:
        rate = self.compress_rate
        return pays(rate if rate is not None else float("inf"), ratio, self.effective_link_rate())

    def _back_off(self) -> None:
        self.compressing = False
        self.skip = min(MAX_SKIP, max(1, self.skip * 2))
        self.skip_left = self.skip


def decompress(data: Buffer, length: int) -> bytes:
    """The chunk's data from its zstd ``data``; ``zstandard.ZstdError`` when it is not that."""
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=length)
