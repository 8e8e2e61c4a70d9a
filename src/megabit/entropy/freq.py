"""Frequency tables for table-based entropy coders (tANS / rANS).

Both coders in :mod:`megabit.entropy` model a symbol ``s`` of an alphabet
``{0, ..., n-1}`` with an integer frequency ``f_s`` and a total
``M = 2**precision_bits``, i.e. the probability ``p_s = f_s / M``.  A symbol
costs (up to the small, bounded coder inefficiency) ``-log2(f_s / M)`` bits.

Quantization (:func:`quantize_frequencies`)
-------------------------------------------
Given empirical counts ``c_s`` (``C = sum c``) we look for integers ``f_s``
that minimise the coded size ``sum_s c_s * -log2(f_s / M)`` (the cross
entropy) subject to

* ``sum_s f_s == M`` exactly,
* ``f_s >= 1`` whenever ``c_s > 0``  (**minimum-probability guarantee**: every
  symbol that occurs in the data can be coded; its probability is at least
  ``2**-precision_bits``, so it never costs more than ``precision_bits`` bits),
* ``f_s == 0`` whenever ``c_s == 0`` (no probability mass is wasted on symbols
  that do not occur; such symbols are *not* encodable).

Algorithm (deterministic, integer arithmetic except for step 3):

1. largest remainder: ``f_s = floor(c_s * M / C)``, the remaining
   ``M - sum f`` units go to the largest remainders ``c_s * M mod C``
   (ties: lowest symbol index first);
2. fix-up: every occurring symbol with ``f_s == 0`` is raised to 1, the units
   are stolen one at a time from the symbol whose decrement costs the least
   bits, ``c_t * log2(f_t / (f_t - 1))`` (``f_t >= 2``), which for similar
   counts is the largest frequency;
3. refinement: while moving one unit from ``t`` to ``s`` lowers the cross
   entropy (``c_s log2((f_s+1)/f_s) > c_t log2(f_t/(f_t-1))``), do it.  The
   objective is separable and convex in ``f``, so this local search stops at
   the global optimum of the integer problem.

The result only depends on the counts and the precision (ties are broken by
symbol index), but it uses floating-point ``log2`` in steps 2-3: **store or
transmit the table** (:func:`freqs_to_bytes`) instead of re-deriving it on
another platform.

Example
-------
>>> import numpy as np
>>> from megabit.entropy.freq import quantize_frequencies, cdf_from_freqs
>>> f = quantize_frequencies(np.array([1000, 10, 0, 1]), precision_bits=8)
>>> f.tolist(), int(f.sum())
([252, 3, 0, 1], 256)
>>> cdf_from_freqs(f).tolist()
[0, 252, 255, 255, 256]
>>> freqs_from_bytes(freqs_to_bytes(f, 8))[0].tolist()
[252, 3, 0, 1]
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "quantize_frequencies",
    "cdf_from_freqs",
    "entropy_bits",
    "cross_entropy_bits",
    "freqs_to_bytes",
    "freqs_from_bytes",
    "precision_of",
]


def _as_counts(counts) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim != 1:
        raise ValueError(f"counts must be a 1-D array, got shape {c.shape}")
    if c.size == 0:
        raise ValueError("counts is empty: the alphabet must have at least one symbol")
    if c.dtype.kind == "f":
        if not np.all(np.isfinite(c)) or np.any(c != np.floor(c)):
            raise ValueError("counts must be finite non-negative integers")
    elif c.dtype.kind not in "iub":
        raise ValueError(f"counts must be integers, got dtype {c.dtype}")
    if np.any(c < 0):
        raise ValueError("counts must be non-negative")
    return c.astype(np.int64)


def quantize_frequencies(counts, precision_bits: int) -> np.ndarray:
    """Normalize ``counts`` to integer frequencies summing to ``2**precision_bits``.

    Guarantees: ``sum(f) == 2**precision_bits``; ``f[s] >= 1`` iff
    ``counts[s] > 0`` (minimum probability ``2**-precision_bits`` for every
    occurring symbol, ``0`` for absent ones); deterministic; optimal
    cross-entropy among all tables with these constraints (see module doc).

    Raises ``ValueError`` if all counts are zero or if there are more
    occurring symbols than ``2**precision_bits`` (each needs at least 1 unit).
    """
    if not isinstance(precision_bits, (int, np.integer)) or not 1 <= int(precision_bits) <= 31:
        raise ValueError(f"precision_bits must be an int in [1, 31], got {precision_bits!r}")
    precision_bits = int(precision_bits)
    c = _as_counts(counts)
    M = 1 << precision_bits
    nz = c > 0
    n_nz = int(nz.sum())
    if n_nz == 0:
        raise ValueError("cannot build a frequency table: all counts are zero")
    if n_nz > M:
        raise ValueError(
            f"{n_nz} symbols occur but precision_bits={precision_bits} only has "
            f"{M} slots (each occurring symbol needs frequency >= 1); "
            f"increase precision_bits to at least {math.ceil(math.log2(n_nz))}"
        )
    total = int(c.sum())

    # 1. largest remainder, exact integer arithmetic (Python ints if needed).
    if total < (1 << 62) // M and int(c.max()) * M < (1 << 62):
        num = c * M
        f = num // total
        rem = num - f * total
    else:  # pragma: no cover - astronomically large counts
        num = [int(x) * M for x in c]
        f = np.array([x // total for x in num], dtype=np.int64)
        rem = np.array([x % total for x in num], dtype=object)
    short = M - int(f.sum())
    if short > 0:
        # stable sort on -remainder: ties go to the lowest index
        order = sorted(range(c.size), key=lambda i: (-int(rem[i]), i))
        for i in order[:short]:
            f[i] += 1
    f = f.astype(np.int64)

    # 2. minimum-probability fix-up.
    cf = c.astype(np.float64)
    need = nz & (f == 0)
    if need.any():
        f[need] = 1
        excess = int(f.sum()) - M
        for _ in range(excess):
            f = _steal_one(f, cf, exclude=-1)

    # 3. exact greedy refinement (separable convex -> global optimum).
    for _ in range(16 * c.size + 1024):
        gain = np.where(nz, cf * np.log2((np.maximum(f, 1) + 1) / np.maximum(f, 1)), -np.inf)
        can_dec = nz & (f >= 2)
        if not can_dec.any():
            break
        loss = np.where(can_dec, cf * _dec_cost(f), np.inf)
        move = _best_move(gain, loss)
        if move is None:
            break
        s, t = move
        f[s] += 1
        f[t] -= 1

    assert int(f.sum()) == M
    assert np.all(f[nz] >= 1) and np.all(f[~nz] == 0)
    return f.astype(np.uint32)


def _dec_cost(f: np.ndarray) -> np.ndarray:
    """log2(f / (f - 1)) for f >= 2 (finite dummy value elsewhere; masked by callers)."""
    f2 = np.maximum(f, 2).astype(np.float64)
    return np.log2(f2 / (f2 - 1.0))


def _improves(g: float, l: float) -> bool:
    return g > l * (1.0 + 1e-12) + 1e-12


def _best_move(gain: np.ndarray, loss: np.ndarray):
    """Return (s, t), s != t, with gain[s] > loss[t] if such a pair exists.

    Complete: if any improving pair (a, b) exists, one of the two candidates
    below is improving (by convexity gain[x] < loss[x] for every x).
    """
    s = int(np.argmax(gain))
    l2 = loss.copy()
    l2[s] = np.inf
    t = int(np.argmin(l2))
    if _improves(gain[s], l2[t]):
        return s, t
    t = int(np.argmin(loss))
    g2 = gain.copy()
    g2[t] = -np.inf
    s = int(np.argmax(g2))
    if _improves(g2[s], loss[t]):
        return s, t
    return None


def _steal_one(f: np.ndarray, cf: np.ndarray, exclude: int) -> np.ndarray:
    """Decrement the frequency whose decrement costs the fewest bits (f >= 2)."""
    ok = f >= 2
    if exclude >= 0:
        ok[exclude] = False
    loss = np.where(ok, cf * _dec_cost(f), np.inf)
    # prefer the largest frequency on exact ties (e.g. equal counts)
    t = int(np.lexsort((np.arange(f.size), -f, loss))[0])
    if not ok[t]:  # pragma: no cover - impossible when n_nz <= M
        raise ValueError("cannot satisfy the minimum-frequency constraint")
    f[t] -= 1
    return f


def precision_of(freqs) -> int:
    """Return ``p`` such that ``sum(freqs) == 2**p``; ``ValueError`` otherwise."""
    f = np.asarray(freqs)
    if f.ndim != 1 or f.size == 0:
        raise ValueError("freqs must be a non-empty 1-D array")
    if f.dtype.kind not in "iu":
        raise ValueError(f"freqs must be integers, got dtype {f.dtype}")
    if np.any(f < 0):
        raise ValueError("freqs must be non-negative")
    total = int(f.astype(np.int64).sum())
    if total <= 0 or total & (total - 1):
        raise ValueError(f"sum(freqs) = {total} is not a power of two")
    return total.bit_length() - 1


def cdf_from_freqs(freqs) -> np.ndarray:
    """Exclusive cumulative frequencies: ``cdf[0] = 0``, ``cdf[s+1] = cdf[s] + f[s]``.

    Returns an ``int64`` array of length ``n + 1`` (``cdf[n] == sum(freqs)``).
    """
    f = np.asarray(freqs).astype(np.int64)
    if f.ndim != 1:
        raise ValueError("freqs must be 1-D")
    out = np.zeros(f.size + 1, dtype=np.int64)
    np.cumsum(f, out=out[1:])
    return out


def entropy_bits(counts) -> float:
    """Empirical Shannon information ``sum_s c_s * log2(C / c_s)`` in bits (total, not per symbol)."""
    c = _as_counts(counts).astype(np.float64)
    total = c.sum()
    if total == 0:
        return 0.0
    c = c[c > 0]
    return float(np.sum(c * np.log2(total / c)))


def cross_entropy_bits(counts, freqs) -> float:
    """Ideal coded size ``sum_s c_s * -log2(f_s / sum f)`` in bits; ``inf`` if an occurring symbol has ``f_s == 0``."""
    c = _as_counts(counts).astype(np.float64)
    f = np.asarray(freqs).astype(np.float64)
    if f.shape != c.shape:
        raise ValueError(f"counts and freqs must have the same shape, got {c.shape} and {f.shape}")
    M = f.sum()
    if M <= 0:
        raise ValueError("freqs must have a positive sum")
    nz = c > 0
    if np.any(f[nz] == 0):
        return math.inf
    return float(np.sum(c[nz] * np.log2(M / f[nz])))


# --------------------------------------------------------------------------
# Compact serialization of a frequency table (what "table bytes" counts).
#
#   u8      precision_bits p
#   varint  n (alphabet size, LEB128)
#   varint  f_0 ... f_{n-2}   (LEB128, little-endian base-128)
#   f_{n-1} is implied: 2**p - sum(f_0..f_{n-2})
# --------------------------------------------------------------------------


def _put_varint(out: bytearray, v: int) -> None:
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    v = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated frequency table")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, pos
        shift += 7
        if shift > 35:
            raise ValueError("corrupted frequency table (varint too long)")


def freqs_to_bytes(freqs, precision_bits: int | None = None) -> bytes:
    """Serialize a frequency table (see layout in the source); small for small alphabets."""
    p = precision_of(freqs)
    if precision_bits is not None and precision_bits != p:
        raise ValueError(f"sum(freqs) = 2**{p} does not match precision_bits={precision_bits}")
    f = np.asarray(freqs).astype(np.int64)
    out = bytearray([p])
    _put_varint(out, int(f.size))
    for v in f[:-1]:
        _put_varint(out, int(v))
    return bytes(out)


def freqs_from_bytes(buf: bytes, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of :func:`freqs_to_bytes`; returns ``(freqs uint32, end_offset)``."""
    buf = bytes(buf)
    if offset >= len(buf):
        raise ValueError("truncated frequency table")
    p = buf[offset]
    if not 1 <= p <= 31:
        raise ValueError(f"corrupted frequency table (precision {p})")
    n, pos = _get_varint(buf, offset + 1)
    if not 1 <= n <= (1 << 16):
        raise ValueError(f"corrupted frequency table (alphabet size {n})")
    f = np.zeros(n, dtype=np.int64)
    for i in range(n - 1):
        f[i], pos = _get_varint(buf, pos)
    last = (1 << p) - int(f[:-1].sum())
    if last < 0:
        raise ValueError("corrupted frequency table (frequencies exceed 2**precision)")
    f[-1] = last
    return f.astype(np.uint32), pos
