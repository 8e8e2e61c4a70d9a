r"""Range asymmetric numeral systems (rANS): 32-bit state, 16-bit renormalization words.

Coder
-----
Probabilities are ``f_s / M`` with ``M = 2**precision_bits``, ``precision_bits``
in 1..16.  The state ``x`` lives in ``[L, 2**32)`` with ``L = 2**16``; the
stream is made of 16-bit words (so a 32-bit MCU never needs 64-bit
arithmetic).  With ``cdf[s] = f_0 + ... + f_{s-1}``::

    encode s:  if x >= f_s << (32 - precision_bits):  emit x & 0xFFFF;  x >>= 16
               x = (x // f_s) * M + (x mod f_s) + cdf[s]
    decode:    slot = x mod M;  s = the symbol with cdf[s] <= slot < cdf[s+1]
               x = f_s * (x >> precision_bits) + slot - cdf[s]
               if x < 2**16:  x = (x << 16) | next_word

At most one word is emitted/read per symbol.  Encode starts every stream in
``x = L``; the decoder must end there (checked).  Exact invertibility holds for
every symbol with ``f_s >= 1``; the cost is ``-log2(f_s/M)`` bits per symbol
plus about 16-32 bits per stream for the final state, plus the rANS
approximation loss from the integer division, which grows with ``M / L``:
measured on a 5-symbol Laplace source (1.5 bits/symbol) it is about 0.01 %
at ``precision_bits = 12``, 0.02 % at 14 and 0.17 % at 16.  Use 12-14 bits
(``encode_array`` defaults to 12).

Interleaving is identical to :mod:`megabit.entropy.tans`: symbol ``i`` belongs
to stream ``i % K``; the encoder runs backwards, the decoder in lockstep
rounds, all streams share one word stream stored in decoder consumption order.

Byte layout (little-endian)
---------------------------
::

    offset  size  field
    0       4     magic b"rANS"
    4       1     format version = 1
    5       1     precision_bits
    6       2     n_streams K (u16)
    8       4     n_symbols (u32)
    12      4     n_words (u32)
    16      4     crc32 of bytes [0, 16) followed by bytes [20, end)
    20      4*K   initial decoder state of stream k (u32, in [2**16, 2**32))
    20+4K   2*n_words   16-bit words (u16), in the order the decoder reads them

Per-symbol distributions (:func:`encode_with_cdfs`)
---------------------------------------------------
Mirrors CompressAI's ``RansEncoder.encode_with_indexes(symbols, indexes, cdfs,
cdfs_sizes, offsets)``: symbol ``i`` is coded with the integer CDF
``cdfs[indexes[i]]`` (``precision`` 16 bits, ``cdf[0] = 0``,
``cdf[cdfs_sizes[j] - 1] = 2**16``, strictly increasing) after subtracting
``offsets[indexes[i]]``.  The last symbol of each CDF
(``max_value = cdfs_sizes[j] - 2``) is an escape: values outside
``[0, max_value)`` are coded as ``max_value`` followed by bypass nibbles (each
coded with probability 1/16): first the count of nibbles ``m`` (a sequence of
nibbles summed until one is < 15), then the ``m`` nibbles of
``raw = -2v-1`` (v < 0) or ``2(v - max_value)`` (v >= max_value), least
significant first.  Because precision 16 would cost ~0.2 % with a 32-bit
state, this coder uses CompressAI's ``Rans64`` parameters: state in
``[2**31, 2**63)``, 32-bit words (``x_max = f << (63 - precision)``; decoder
renormalizes with ``x = (x << 32) | word`` when ``x < 2**31``).  Single
stream; layout::

    0       20    header as above with magic b"rANC", precision in byte 5,
                  n_streams = 1, n_words = number of 32-bit words
    20      8     initial decoder state (u64, in [2**31, 2**63))
    28      4*n_words   32-bit words (u32) in decoder read order

The bytes are **not** compatible with CompressAI's (different header; CompressAI
has no header/CRC), only the calling contract and coding semantics are.

Example
-------
>>> import numpy as np
>>> from megabit.entropy import rans, quantize_frequencies
>>> x = np.array([3, 3, 0, 3, 1, 3, 3, 2] * 100)
>>> freqs = quantize_frequencies(np.bincount(x), 12)
>>> payload = rans.encode(x, freqs, 12, n_streams=8)
>>> bool(np.array_equal(rans.decode(payload, freqs, 12, len(x), n_streams=8), x))
True
>>> cdfs = np.array([[0, 30000, 60000, 65535, 65536]])   # 3 symbols + escape
>>> vals = np.array([-1, 0, 1, 7, -100], dtype=np.int32)  # offset -1: 7 and -100 escape
>>> p = rans.encode_with_cdfs(vals, np.zeros(5, int), cdfs, [5], [-1])
>>> rans.decode_with_cdfs(p, np.zeros(5, int), cdfs, [5], [-1]).tolist()
[-1, 0, 1, 7, -100]
"""

from __future__ import annotations

import functools

import numpy as np

from . import _common as C
from .freq import cdf_from_freqs, precision_of

__all__ = [
    "encode",
    "decode",
    "encode_with_cdfs",
    "decode_with_cdfs",
    "MAGIC",
    "MAGIC_CDF",
    "RANS_L",
    "CDF_RANS_L",
    "MAX_PRECISION",
    "BYPASS_PRECISION",
]

MAGIC = b"rANS"
MAGIC_CDF = b"rANC"
RANS_L = 1 << 16
CDF_RANS_L = 1 << 31  # per-symbol-CDF coder: 64-bit (63-bit) state, 32-bit words
MAX_PRECISION = 16
BYPASS_PRECISION = 4
MAX_BYPASS_VAL = (1 << BYPASS_PRECISION) - 1
_MAX_BYPASS_NIBBLES = 9  # raw values of int32 differences need at most 33 bits
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


def _check_precision(freqs, precision_bits) -> tuple[np.ndarray, int]:
    f = np.asarray(freqs)
    p = precision_of(f)
    if precision_bits is None:
        precision_bits = p
    if not isinstance(precision_bits, (int, np.integer)) or not 1 <= int(precision_bits) <= MAX_PRECISION:
        raise ValueError(f"precision_bits must be an int in [1, {MAX_PRECISION}], got {precision_bits!r}")
    if p != int(precision_bits):
        raise ValueError(f"sum(freqs) = 2**{p} but precision_bits = {precision_bits}")
    if f.size > (1 << 16):
        raise ValueError("rANS supports alphabets of at most 65536 symbols")
    return f.astype(np.int64), int(precision_bits)


def _slot_table(f: np.ndarray) -> np.ndarray:
    dt = np.uint8 if f.size <= 256 else np.uint16
    return np.repeat(np.arange(f.size), f).astype(dt)


# ------------------------------------------------------------ reference ----


def _encode_python(sym: np.ndarray, f: np.ndarray, prec: int, K: int):
    n = sym.size
    fl = f.tolist()
    cum = cdf_from_freqs(f).tolist()
    syms = sym.tolist()
    words = [-1] * n
    states = [RANS_L] * K
    shift = 32 - prec
    for i in range(n - 1, -1, -1):
        k = i % K
        x = states[k]
        s = syms[i]
        fs = fl[s]
        if x >= fs << shift:
            words[i] = x & 0xFFFF
            x >>= 16
        states[k] = ((x // fs) << prec) + (x % fs) + cum[s]
    w = [v for v in words if v >= 0]
    return np.asarray(w, dtype="<u2").tobytes(), len(w), states


def _decode_python(words: list, f: np.ndarray, prec: int, init: list, n: int):
    K = len(init)
    fl = f.tolist()
    cum = cdf_from_freqs(f).tolist()
    slot2sym = _slot_table(f).tolist()
    mask = (1 << prec) - 1
    states = list(init)
    out = [0] * n
    wp = 0
    nw = len(words)
    for i in range(n):
        k = i % K
        x = states[k]
        slot = x & mask
        s = slot2sym[slot]
        x = fl[s] * (x >> prec) + slot - cum[s]
        if x < RANS_L:
            x = (x << 16) | (words[wp] if wp < nw else 0)
            wp += 1
        states[k] = x
        out[i] = s
    return out, wp, states


# ---------------------------------------------------------------- numba ----


def _encode_kernel(sym, K, prec, f, cum):
    n = sym.shape[0]
    tmp = np.empty(n, dtype=np.uint16)
    has = np.zeros(n, dtype=np.bool_)
    states = np.empty(K, dtype=np.int64)
    for k in range(K):
        states[k] = 1 << 16
    shift = 32 - prec
    nw = 0
    if n > 0:
        k = (n - 1) % K
        for i in range(n - 1, -1, -1):
            x = states[k]
            s = sym[i]
            fs = f[s]
            if x >= (fs << shift):
                tmp[i] = x & 0xFFFF
                has[i] = True
                nw += 1
                x >>= 16
            states[k] = ((x // fs) << prec) + (x % fs) + cum[s]
            k -= 1
            if k < 0:
                k = K - 1
    words = np.empty(nw, dtype=np.uint16)
    j = 0
    for i in range(n):
        if has[i]:
            words[j] = tmp[i]
            j += 1
    return words, states


def _decode_kernel(words_p, nw, dtab, prec, init_states, n, out):
    """Lockstep K-stream decoder.

    ``dtab[slot] = f_s | (slot - cdf[s]) << 17 | s << 33`` (one load per
    symbol); ``words_p`` is the word stream plus one zero word so that the
    renormalization read is branch-free and never out of bounds.
    """
    K = init_states.shape[0]
    states = init_states.copy()
    mask = (1 << prec) - 1
    wp = 0
    k = 0
    for i in range(n):
        x = states[k]
        e = dtab[x & mask]
        x = (e & 0x1FFFF) * (x >> prec) + ((e >> 17) & 0xFFFF)
        w = words_p[min(wp, nw)]
        if x < 65536:
            x = (x << 16) | w
            wp += 1
        states[k] = x
        out[i] = e >> 33
        k += 1
        if k == K:
            k = 0
    ok = True
    for k in range(K):
        if states[k] != 65536:
            ok = False
    return wp, ok


def _decode_kernel_k1(words_p, nw, dtab, prec, x, n, out):
    """Single-stream specialization (state in a register, branch-free renormalization)."""
    mask = (1 << prec) - 1
    wp = 0
    for i in range(n):
        e = dtab[x & mask]
        x = (e & 0x1FFFF) * (x >> prec) + ((e >> 17) & 0xFFFF)
        w = words_p[min(wp, nw)]
        nd = x < 65536
        x = (x << 16) | w if nd else x
        wp += nd
        out[i] = e >> 33
    return wp, x == 65536


@functools.lru_cache(maxsize=32)
def _decode_table(fbytes: bytes) -> np.ndarray:
    f = np.frombuffer(fbytes, dtype=np.int64)
    cum = cdf_from_freqs(f)
    sym = np.repeat(np.arange(f.size, dtype=np.int64), f)
    slots = np.arange(sym.size, dtype=np.int64)
    tab = f[sym] | ((slots - cum[sym]) << 17) | (sym << 33)
    tab.setflags(write=False)
    return tab


_encode_nb = C.jit(_encode_kernel)
_decode_nb = C.jit(_decode_kernel)
_decode_nb_k1 = C.jit(_decode_kernel_k1)


# ------------------------------------------------------------------ API ----


def encode(symbols, freqs, precision_bits: int | None = None, n_streams: int = 1, *, backend: str | None = None) -> bytes:
    """rANS-encode ``symbols`` (ints in ``[0, len(freqs))``, flattened) with K interleaved streams.

    Same calling convention as :func:`megabit.entropy.tans.encode` (the third
    argument is the probability precision ``log2(sum(freqs))``, <= 16).
    """
    f, prec = _check_precision(freqs, precision_bits)
    K = C.check_n_streams(n_streams)
    sym = C.as_symbols(symbols, f)
    if C.resolve_backend(backend) == "numba":
        words, states = _encode_nb(sym, K, prec, f, cdf_from_freqs(f))
        wbytes = words.astype("<u2").tobytes()
        nw = words.size
    else:
        wbytes, nw, states = _encode_python(sym, f, prec, K)
    body = np.asarray(states, dtype="<u4").tobytes() + wbytes
    return C.pack_header(MAGIC, prec, K, sym.size, nw, body)


def decode(
    data,
    freqs,
    precision_bits: int | None = None,
    n_symbols: int | None = None,
    n_streams: int | None = 1,
    *,
    backend: str | None = None,
    check_crc: bool = True,
) -> np.ndarray:
    """Decode a payload from :func:`encode`; returns ``uint8`` (``uint16`` for alphabets > 256)."""
    f, prec = _check_precision(freqs, precision_bits)
    log, K, n, nw, body = C.unpack_header(data, MAGIC, check_crc)
    C.check_match("precision_bits", log, prec)
    C.check_match("n_symbols", n, n_symbols)
    C.check_match("n_streams", K, n_streams)
    if len(body) != 4 * K + 2 * nw:
        raise ValueError(
            f"payload length mismatch: expected {C.HEADER_SIZE + 4 * K + 2 * nw} bytes, got {C.HEADER_SIZE + len(body)}"
        )
    if nw > n:
        raise ValueError("corrupted payload: more words than symbols")
    init = np.frombuffer(body[: 4 * K], dtype="<u4").astype(np.int64)
    if np.any(init < RANS_L):
        raise ValueError("corrupted payload: initial state below 2**16")
    words = np.frombuffer(body[4 * K :], dtype="<u2").astype(np.uint16)
    dt = np.uint8 if f.size <= 256 else np.uint16
    if C.resolve_backend(backend) == "numba":
        out = np.empty(n, dtype=dt)
        words_p = np.zeros(nw + 1, dtype=np.uint16)
        words_p[:nw] = words
        dtab = _decode_table(f.tobytes())
        if K == 1:
            used, ok = _decode_nb_k1(words_p, nw, dtab, prec, int(init[0]), n, out)
        else:
            used, ok = _decode_nb(words_p, nw, dtab, prec, init, n, out)
    else:
        res, used, states = _decode_python(words.tolist(), f, prec, init.tolist(), n)
        out = np.asarray(res, dtype=dt)
        ok = all(x == RANS_L for x in states)
    if used != nw:
        raise ValueError(f"corrupted payload: decoder consumed {used} words, payload has {nw}")
    if not ok:
        raise ValueError("corrupted payload: decoder did not return to the initial state")
    return out


# ------------------------------------------------- per-symbol CDF coder ----


def _as_cdf_tables(cdf_indices, cdfs, cdf_lengths, offsets, precision: int, n: int | None = None):
    if not isinstance(precision, (int, np.integer)) or not 1 <= int(precision) <= MAX_PRECISION:
        raise ValueError(f"precision must be an int in [1, {MAX_PRECISION}], got {precision!r}")
    M = 1 << int(precision)
    lengths = np.asarray(cdf_lengths).astype(np.int64).reshape(-1)
    offs = np.asarray(offsets).astype(np.int64).reshape(-1)
    if isinstance(cdfs, np.ndarray) and cdfs.ndim == 2:
        tab = cdfs.astype(np.int64)
    else:
        rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in cdfs]
        width = max((r.size for r in rows), default=0)
        tab = np.zeros((len(rows), max(width, 1)), dtype=np.int64)
        for i, r in enumerate(rows):
            tab[i, : r.size] = r
    n_cdfs = tab.shape[0]
    if n_cdfs == 0:
        raise ValueError("cdfs is empty")
    if lengths.size != n_cdfs or offs.size != n_cdfs:
        raise ValueError(f"cdfs ({n_cdfs}), cdf_lengths ({lengths.size}) and offsets ({offs.size}) must have the same length")
    if np.any(lengths < 2) or np.any(lengths > tab.shape[1]):
        raise ValueError("each cdf_length must be in [2, cdfs.shape[1]] (>= 1 symbol: the escape)")
    if np.any(offs < _I32_MIN) or np.any(offs > _I32_MAX):
        raise ValueError("offsets must fit in int32")
    cols = np.arange(tab.shape[1])
    valid = cols[None, :] < lengths[:, None]
    if np.any(tab[:, 0] != 0):
        raise ValueError("every cdf must start at 0")
    if np.any(tab[np.arange(n_cdfs), lengths - 1] != M):
        raise ValueError(f"every cdf must end at 2**precision = {M} (at index cdf_length - 1)")
    inc = np.diff(tab, axis=1) > 0
    if np.any(~inc & valid[:, 1:]):
        raise ValueError("cdfs must be strictly increasing (every symbol, incl. the escape, needs frequency >= 1)")
    idx = np.asarray(cdf_indices)
    if idx.dtype.kind not in "iu":
        raise ValueError(f"cdf_indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64).reshape(-1)
    if n is not None and idx.size != n:
        raise ValueError(f"got {idx.size} cdf_indices for {n} symbols")
    if idx.size and (idx.min() < 0 or idx.max() >= n_cdfs):
        raise ValueError(f"cdf_indices must lie in [0, {n_cdfs})")
    return np.ascontiguousarray(idx), np.ascontiguousarray(tab), lengths, offs


def _put(x, start, freq, scale, words, nw):
    """One 64-bit rANS encode step (reference helper). Returns (x, nw)."""
    if (x >> (63 - scale)) >= freq:  # == x >= freq << (63 - scale), no int64 overflow
        words.append(x & 0xFFFFFFFF)
        nw += 1
        x >>= 32
    return ((x // freq) << scale) + (x % freq) + start, nw


def _cdf_encode_python(vals, idx, tab, lengths, offs, prec):
    words: list = []
    x = CDF_RANS_L
    nw = 0
    for i in range(len(vals) - 1, -1, -1):
        j = int(idx[i])
        maxv = int(lengths[j]) - 2
        v = int(vals[i]) - int(offs[j])
        if v < 0 or v >= maxv:
            raw = -2 * v - 1 if v < 0 else 2 * (v - maxv)
            nb = 0
            while raw >> (nb * BYPASS_PRECISION):
                nb += 1
            # decode order: [count nibbles..., raw nibbles j = 0..nb-1]; push reversed
            for b in range(nb - 1, -1, -1):
                x, nw = _put(x, (raw >> (b * BYPASS_PRECISION)) & MAX_BYPASS_VAL, 1, BYPASS_PRECISION, words, nw)
            cnt = []
            m = nb
            while m >= MAX_BYPASS_VAL:
                cnt.append(MAX_BYPASS_VAL)
                m -= MAX_BYPASS_VAL
            cnt.append(m)
            for c in reversed(cnt):
                x, nw = _put(x, c, 1, BYPASS_PRECISION, words, nw)
            v = maxv
        lo = int(tab[j, v])
        x, nw = _put(x, lo, int(tab[j, v + 1]) - lo, prec, words, nw)
    words.reverse()
    return np.asarray(words, dtype="<u4").tobytes(), nw, x


def _cdf_decode_python(words, idx, tab, lengths, offs, prec, x):
    n = len(idx)
    out = np.empty(n, dtype=np.int32)
    mask = (1 << prec) - 1
    wp = 0
    nw = len(words)

    def renorm(x, wp):
        if x < CDF_RANS_L:
            x = (x << 32) | (words[wp] if wp < nw else 0)
            wp += 1
        return x, wp

    def get_bits(x, wp):
        v = x & MAX_BYPASS_VAL
        x, wp = renorm(x >> BYPASS_PRECISION, wp)
        return v, x, wp

    for i in range(n):
        j = int(idx[i])
        L = int(lengths[j])
        maxv = L - 2
        slot = x & mask
        row = tab[j]
        lo, hi = 0, L - 1  # invariant row[lo] <= slot < row[hi]
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if row[mid] <= slot:
                lo = mid
            else:
                hi = mid
        s = lo
        start = int(row[s])
        x = (int(row[s + 1]) - start) * (x >> prec) + slot - start
        x, wp = renorm(x, wp)
        v = s
        if v == maxv:
            val, x, wp = get_bits(x, wp)
            nb = val
            while val == MAX_BYPASS_VAL:
                if nb > _MAX_BYPASS_NIBBLES:
                    raise ValueError("corrupted payload: bypass length too large")
                val, x, wp = get_bits(x, wp)
                nb += val
            if nb > _MAX_BYPASS_NIBBLES:
                raise ValueError("corrupted payload: bypass length too large")
            raw = 0
            for b in range(nb):
                val, x, wp = get_bits(x, wp)
                raw |= val << (b * BYPASS_PRECISION)
            v = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + maxv
        v += int(offs[j])
        if not _I32_MIN <= v <= _I32_MAX:
            raise ValueError("corrupted payload: decoded value outside int32")
        out[i] = v
    return out, wp, x


def _cdf_encode_kernel(vals, idx, tab, lengths, offs, prec, cap):
    n = vals.shape[0]
    stack = np.empty(cap, dtype=np.uint32)
    nw = 0
    x = np.int64(1) << 31
    cnt = np.empty(8, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        j = idx[i]
        maxv = lengths[j] - 2
        v = np.int64(vals[i]) - offs[j]
        if v < 0 or v >= maxv:
            raw = -2 * v - 1 if v < 0 else 2 * (v - maxv)
            nb = 0
            while (raw >> (nb * 4)) != 0:
                nb += 1
            for b in range(nb - 1, -1, -1):
                if x >= (np.int64(1) << 59):
                    stack[nw] = x & 0xFFFFFFFF
                    nw += 1
                    x >>= 32
                x = (x << 4) + ((raw >> (b * 4)) & 15)
            m = nb
            nc = 0
            while m >= 15:
                cnt[nc] = 15
                nc += 1
                m -= 15
            cnt[nc] = m
            nc += 1
            for c in range(nc - 1, -1, -1):
                if x >= (np.int64(1) << 59):
                    stack[nw] = x & 0xFFFFFFFF
                    nw += 1
                    x >>= 32
                x = (x << 4) + cnt[c]
            v = maxv
        start = tab[j, v]
        fs = tab[j, v + 1] - start
        if (x >> (63 - prec)) >= fs:
            stack[nw] = x & 0xFFFFFFFF
            nw += 1
            x >>= 32
        x = ((x // fs) << prec) + (x % fs) + start
    words = np.empty(nw, dtype=np.uint32)
    for i in range(nw):
        words[i] = stack[nw - 1 - i]
    return words, x


def _cdf_decode_kernel(words, idx, tab, lengths, offs, prec, x, out):
    """Returns (words used, status): status 0 ok, 1 bypass too long, 2 value out of int32."""
    n = idx.shape[0]
    nw = words.shape[0]
    mask = (np.int64(1) << prec) - 1
    wp = 0
    for i in range(n):
        j = idx[i]
        L = lengths[j]
        maxv = L - 2
        slot = x & mask
        lo = 0
        hi = L - 1
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if tab[j, mid] <= slot:
                lo = mid
            else:
                hi = mid
        start = tab[j, lo]
        x = (tab[j, lo + 1] - start) * (x >> prec) + slot - start
        if x < 2147483648:
            w = 0
            if wp < nw:
                w = words[wp]
            x = (x << 32) | w
            wp += 1
        v = np.int64(lo)
        if v == maxv:
            nb = 0
            val = 15
            first = True
            while first or val == 15:
                if nb > 9:
                    return wp, 1, x
                first = False
                val = x & 15
                x >>= 4
                if x < 2147483648:
                    w = 0
                    if wp < nw:
                        w = words[wp]
                    x = (x << 32) | w
                    wp += 1
                nb += val
            if nb > 9:
                return wp, 1, x
            raw = np.int64(0)
            for b in range(nb):
                val = x & 15
                x >>= 4
                if x < 2147483648:
                    w = 0
                    if wp < nw:
                        w = words[wp]
                    x = (x << 32) | w
                    wp += 1
                raw |= val << (b * 4)
            if raw & 1:
                v = -(raw >> 1) - 1
            else:
                v = (raw >> 1) + maxv
        v += offs[j]
        if v < -2147483648 or v > 2147483647:
            return wp, 2, x
        out[i] = v
    return wp, 0, x


_cdf_encode_nb = C.jit(_cdf_encode_kernel)
_cdf_decode_nb = C.jit(_cdf_decode_kernel)


def encode_with_cdfs(
    symbols,
    cdf_indices,
    cdfs,
    cdf_lengths,
    offsets,
    *,
    precision: int = 16,
    backend: str | None = None,
) -> bytes:
    """rANS64-encode int32 ``symbols`` with per-symbol CDFs (CompressAI ``encode_with_indexes`` contract).

    ``cdfs``: 2-D int array (or list of lists) of quantized CDFs, row ``j``
    valid on ``[0, cdf_lengths[j])``; ``offsets[j]`` is subtracted from the
    symbols coded with row ``j``.  Out-of-range values use the escape symbol
    and bypass nibbles (see module docstring).
    """
    vals = np.asarray(symbols)
    if vals.dtype.kind not in "iu":
        raise ValueError(f"symbols must be integers, got dtype {vals.dtype}")
    vals = vals.astype(np.int64).reshape(-1)
    if vals.size and (vals.min() < _I32_MIN or vals.max() > _I32_MAX):
        raise ValueError("symbols must fit in int32")
    idx, tab, lengths, offs = _as_cdf_tables(cdf_indices, cdfs, cdf_lengths, offsets, precision, vals.size)
    prec = int(precision)
    if C.resolve_backend(backend) == "numba":
        v = vals - offs[idx]
        maxv = lengths[idx] - 2
        n_esc = int(np.count_nonzero((v < 0) | (v >= maxv)))
        words, x = _cdf_encode_nb(vals, idx, tab, lengths, offs, prec, vals.size + 12 * n_esc + 1)
        wbytes, nw = words.astype("<u4").tobytes(), words.size
    else:
        wbytes, nw, x = _cdf_encode_python(vals, idx, tab, lengths, offs, prec)
    body = np.asarray([x], dtype="<u8").tobytes() + wbytes
    return C.pack_header(MAGIC_CDF, prec, 1, vals.size, nw, body)


def decode_with_cdfs(
    data,
    cdf_indices,
    cdfs,
    cdf_lengths,
    offsets,
    *,
    precision: int = 16,
    backend: str | None = None,
    check_crc: bool = True,
) -> np.ndarray:
    """Inverse of :func:`encode_with_cdfs`; returns ``int32[len(cdf_indices)]``."""
    log, K, n, nw, body = C.unpack_header(data, MAGIC_CDF, check_crc)
    C.check_match("precision", log, precision)
    C.check_match("n_streams", K, 1)
    idx, tab, lengths, offs = _as_cdf_tables(cdf_indices, cdfs, cdf_lengths, offsets, precision)
    C.check_match("n_symbols", n, idx.size)
    if len(body) != 8 + 4 * nw:
        raise ValueError(f"payload length mismatch: expected {C.HEADER_SIZE + 8 + 4 * nw} bytes, got {C.HEADER_SIZE + len(body)}")
    x = int(np.frombuffer(body[:8], dtype="<u8")[0])
    if not CDF_RANS_L <= x < (1 << 63):
        raise ValueError("corrupted payload: initial state outside [2**31, 2**63)")
    words = np.frombuffer(body[8:], dtype="<u4").astype(np.uint32)
    prec = int(precision)
    if C.resolve_backend(backend) == "numba":
        out = np.empty(n, dtype=np.int32)
        used, status, x = _cdf_decode_nb(words, idx, tab, lengths, offs, prec, x, out)
        if status == 1:
            raise ValueError("corrupted payload: bypass length too large")
        if status == 2:
            raise ValueError("corrupted payload: decoded value outside int32")
    else:
        out, used, x = _cdf_decode_python(words.tolist(), idx, tab, lengths, offs, prec, x)
    if used != nw:
        raise ValueError(f"corrupted payload: decoder consumed {used} words, payload has {nw}")
    if x != CDF_RANS_L:
        raise ValueError("corrupted payload: decoder did not return to the initial state")
    return out
