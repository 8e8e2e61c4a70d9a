"""Entropy coding of quantized weights: tANS (LUT decoder) and rANS, with K interleaved streams.

After arXiv:2406.06237 ("Efficient Neural Compression with Inference-time
Decoding"): quantized weights are mapped to a small alphabet ``{0..n-1}``,
a frequency table ``f`` with ``sum(f) = 2**table_log`` is built from their
histogram (:func:`quantize_frequencies`, every occurring symbol gets
``f_s >= 1``) and the symbols are coded with

* :mod:`megabit.entropy.tans` -- table ANS; decoding is one LUT read and one
  bit read per symbol (``uint32 lut[2**table_log]``), the format to ship to a
  microcontroller / hardware decoder;
* :mod:`megabit.entropy.rans` -- range ANS (32-bit state, 16-bit words), plus
  :func:`encode_with_cdfs` for per-symbol CDFs (learned image codecs).

Both coders support ``n_streams = K`` interleaved streams (symbol ``i`` in
stream ``i % K``, lockstep decoding), are exactly invertible, write
little-endian self-checking payloads (length, CRC32, final-state checks; any
detected inconsistency raises ``ValueError``) and have a pure-Python reference
plus a numba fast path producing identical bytes (``backend="python"|"numba"``).
Byte layouts: see the module docstrings and ``docs/entropy.md``.

Example
-------
>>> import numpy as np
>>> from megabit.entropy import encode_array, decode_array, entropy_bits
>>> rng = np.random.default_rng(0)
>>> w = np.clip(np.round(rng.laplace(0, 0.6, 10_000)), -2, 2).astype(int) + 2
>>> payload, freqs = encode_array(w, coder="tans", table_log=10, n_streams=8)
>>> bool(np.array_equal(decode_array(payload, freqs), w))
True
>>> bits = 8 * len(payload)
>>> bool(bits < 1.01 * entropy_bits(np.bincount(w)) + 8 * (20 + 2 * 8) + 8 * 10)
True
"""

from __future__ import annotations

import numpy as np

from . import rans, tans
from .freq import (
    cdf_from_freqs,
    cross_entropy_bits,
    entropy_bits,
    freqs_from_bytes,
    freqs_to_bytes,
    quantize_frequencies,
)
from .rans import decode_with_cdfs, encode_with_cdfs
from .tans import TansTables, build_tables

__all__ = [
    "quantize_frequencies",
    "cdf_from_freqs",
    "entropy_bits",
    "cross_entropy_bits",
    "freqs_to_bytes",
    "freqs_from_bytes",
    "TansTables",
    "build_tables",
    "tans",
    "rans",
    "encode_with_cdfs",
    "decode_with_cdfs",
    "encode_array",
    "decode_array",
    "DEFAULT_TABLE_LOG",
]

#: default ``table_log`` per coder (tANS: 4 KiB decode LUT; rANS: 12-bit precision, see rans docs)
DEFAULT_TABLE_LOG = {"tans": 10, "rans": 12}
_CODERS = {"tans": tans, "rans": rans}
_MAGICS = {tans.MAGIC: "tans", rans.MAGIC: "rans"}


def encode_array(
    symbols,
    coder: str = "tans",
    table_log: int | None = None,
    n_streams: int = 1,
    *,
    backend: str | None = None,
) -> tuple[bytes, np.ndarray]:
    """Build the frequency table from the histogram of ``symbols`` and encode them.

    ``symbols``: non-negative integers (any shape; flattened in C order).
    ``table_log``: tANS table size / rANS precision, default
    :data:`DEFAULT_TABLE_LOG`.  Returns ``(payload, freqs)``; ``freqs``
    (uint32, sums to ``2**table_log``) must be stored alongside the payload
    (e.g. :func:`freqs_to_bytes`).
    """
    if coder not in _CODERS:
        raise ValueError(f"coder must be 'tans' or 'rans', got {coder!r}")
    if table_log is None:
        table_log = DEFAULT_TABLE_LOG[coder]
    s = np.asarray(symbols)
    if s.dtype.kind not in "iub":
        raise ValueError(f"symbols must be integers, got dtype {s.dtype}")
    s = s.reshape(-1)
    if s.size and int(s.min()) < 0:
        raise ValueError("symbols must be non-negative (shift quantized weights by their minimum first)")
    counts = np.bincount(s.astype(np.int64), minlength=1) if s.size else np.ones(1, dtype=np.int64)
    freqs = quantize_frequencies(counts, table_log)
    payload = _CODERS[coder].encode(s, freqs, table_log, n_streams, backend=backend)
    return payload, freqs


def decode_array(
    payload,
    freqs,
    n_symbols: int | None = None,
    coder: str | None = None,
    table_log: int | None = None,
    n_streams: int | None = None,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """Decode a payload from :func:`encode_array`.

    The coder is detected from the payload magic when ``coder`` is None;
    ``n_symbols`` / ``table_log`` / ``n_streams`` default to the header values
    and are checked against it when given.
    """
    head = bytes(memoryview(payload)[:4]) if isinstance(payload, (bytes, bytearray, memoryview)) else b""
    if coder is None:
        if head not in _MAGICS:
            raise ValueError(f"unknown payload magic {head!r}")
        coder = _MAGICS[head]
    if coder not in _CODERS:
        raise ValueError(f"coder must be 'tans' or 'rans', got {coder!r}")
    return _CODERS[coder].decode(payload, freqs, table_log, n_symbols, n_streams, backend=backend)
