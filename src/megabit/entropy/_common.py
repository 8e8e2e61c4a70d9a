"""Shared helpers: backend selection, payload header, input validation."""

from __future__ import annotations

import os
import struct
import warnings
import zlib

import numpy as np

# ---------------------------------------------------------------- numba ----
HAVE_NUMBA = False
njit = None
if os.environ.get("MEGABIT_NO_NUMBA", "") in ("", "0"):
    try:  # pragma: no branch
        import numba as _numba

        njit = _numba.njit
        HAVE_NUMBA = True
    except Exception:  # pragma: no cover - numba missing or broken
        HAVE_NUMBA = False


def jit(fn):
    """``numba.njit(cache=True, nogil=True)`` when numba is available, else ``None``."""
    if not HAVE_NUMBA:
        return None
    return njit(cache=True, nogil=True)(fn)


def resolve_backend(backend: str | None) -> str:
    """Map ``None`` / ``"numba"`` / ``"python"`` to the backend actually used."""
    if backend is None:
        return "numba" if HAVE_NUMBA else "python"
    if backend not in ("numba", "python"):
        raise ValueError(f"backend must be 'numba', 'python' or None, got {backend!r}")
    if backend == "numba" and not HAVE_NUMBA:
        warnings.warn("numba is not available; falling back to the python backend", RuntimeWarning, stacklevel=3)
        return "python"
    return backend


# --------------------------------------------------------------- header ----
# All multi-byte fields little-endian.
#   0  4s  magic
#   4  u8  format version (1)
#   5  u8  table_log / precision_bits
#   6  u16 n_streams K
#   8  u32 n_symbols
#  12  u32 n_units  (tANS: number of valid bits; rANS: number of 16-bit words)
#  16  u32 crc32 of bytes [0, 16) followed by bytes [20, end)
HEADER = struct.Struct("<4sBBHIII")
HEADER_SIZE = HEADER.size  # 20
VERSION = 1


def pack_header(magic: bytes, log: int, k: int, n: int, units: int, body: bytes) -> bytes:
    if n > 0xFFFFFFFF or units > 0xFFFFFFFF:
        raise ValueError("input too large for the 32-bit header fields (max 2**32-1 symbols / units)")
    head16 = HEADER.pack(magic, VERSION, log, k, n, units, 0)[:16]
    crc = zlib.crc32(body, zlib.crc32(head16)) & 0xFFFFFFFF
    return head16 + struct.pack("<I", crc) + body


def unpack_header(data, magic: bytes, check_crc: bool):
    """Parse and validate the common header; returns (log, k, n, units, memoryview body)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"payload must be bytes-like, got {type(data).__name__}")
    mv = memoryview(data).cast("B")
    if len(mv) < HEADER_SIZE:
        raise ValueError(f"payload truncated: {len(mv)} bytes < {HEADER_SIZE}-byte header")
    mg, ver, log, k, n, units, crc = HEADER.unpack(mv[:HEADER_SIZE])
    if mg != magic:
        raise ValueError(f"bad magic {bytes(mg)!r}, expected {magic!r} (wrong coder or corrupted payload)")
    if ver != VERSION:
        raise ValueError(f"unsupported format version {ver}")
    if k == 0:
        raise ValueError("corrupted header: n_streams == 0")
    body = mv[HEADER_SIZE:]
    if check_crc:
        c = zlib.crc32(body, zlib.crc32(mv[:16])) & 0xFFFFFFFF
        if c != crc:
            raise ValueError("checksum mismatch: payload corrupted")
    return log, k, n, units, body


def check_match(name: str, got: int, expected) -> None:
    if expected is not None and int(expected) != got:
        raise ValueError(f"{name} mismatch: payload has {got}, caller passed {expected}")


def as_symbols(symbols, freqs: np.ndarray) -> np.ndarray:
    """Flatten ``symbols`` to a contiguous int array and check they are codable with ``freqs``."""
    s = np.asarray(symbols)
    if s.dtype.kind not in "iub":
        raise ValueError(f"symbols must be integers, got dtype {s.dtype}")
    s = s.reshape(-1)
    n_alpha = freqs.size
    if s.size:
        lo, hi = int(s.min()), int(s.max())
        if lo < 0 or hi >= n_alpha:
            raise ValueError(f"symbols must lie in [0, {n_alpha}), got range [{lo}, {hi}]")
        present = np.bincount(s.astype(np.int64), minlength=n_alpha) > 0
        bad = np.flatnonzero(present & (freqs == 0))
        if bad.size:
            raise ValueError(f"symbol(s) {bad[:8].tolist()} occur but have frequency 0")
    dt = np.uint8 if n_alpha <= 256 else np.uint16
    return np.ascontiguousarray(s, dtype=dt)


def check_n_streams(n_streams) -> int:
    k = int(n_streams)
    if k != n_streams or not 1 <= k <= 0xFFFF:
        raise ValueError(f"n_streams must be an int in [1, 65535], got {n_streams!r}")
    return k
