"""Incremental decoding of a ``rANC`` payload (:func:`megabit.entropy.rans.encode_with_cdfs`).

Autoregressive codecs learn the CDF index of symbol ``i`` only after decoding symbols ``< i``, so
the batch ``decode_with_cdfs`` cannot be used. This reuses the reference decoder of
``megabit.entropy.rans`` chunk by chunk (it resumes from any state and word position), and checks the
same end-of-stream conditions as ``decode_with_cdfs``.
"""

from __future__ import annotations

import numpy as np

from megabit.entropy import _common as C
from megabit.entropy import rans

__all__ = ["CdfStreamDecoder"]


class CdfStreamDecoder:
    """Decode a rANC payload in pieces: ``decode(indexes)`` any number of times, then ``finish()``."""

    def __init__(self, data: bytes, cdfs: np.ndarray, cdf_lengths: np.ndarray, offsets: np.ndarray, precision: int = 16):
        log, K, n, nw, body = C.unpack_header(data, rans.MAGIC_CDF, True)
        C.check_match("precision", log, precision)
        if len(body) != 8 + 4 * nw:
            raise ValueError("corrupted payload: length mismatch")
        self.x = int(np.frombuffer(body[:8], dtype="<u8")[0])
        if not rans.CDF_RANS_L <= self.x < (1 << 63):
            raise ValueError("corrupted payload: initial state outside [2**31, 2**63)")
        self.words = np.frombuffer(body[8:], dtype="<u4").astype(np.int64).tolist()
        self.n, self.nw = n, nw
        self.pos = 0
        self.decoded = 0
        _, self.tab, self.lengths, self.offs = rans._as_cdf_tables(
            np.zeros(1, dtype=np.int64), cdfs, cdf_lengths, offsets, precision)
        self.prec = int(precision)

    def decode(self, indexes: np.ndarray) -> np.ndarray:
        idx = np.asarray(indexes, dtype=np.int64).reshape(-1)
        if self.decoded + idx.size > self.n:
            raise ValueError("corrupted payload: more symbols requested than it holds")
        if idx.size and (idx.min() < 0 or idx.max() >= self.tab.shape[0]):
            raise ValueError("cdf index out of range")
        out, used, self.x = rans._cdf_decode_python(self.words[self.pos:], idx, self.tab, self.lengths, self.offs,
                                                    self.prec, self.x)
        self.pos += used
        self.decoded += idx.size
        return out

    def finish(self) -> None:
        if self.decoded != self.n:
            raise ValueError(f"payload holds {self.n} symbols, {self.decoded} decoded")
        if self.pos != self.nw or self.x != rans.CDF_RANS_L:
            raise ValueError("corrupted payload: decoder did not end in the initial state")
