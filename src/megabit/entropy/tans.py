r"""Table-based asymmetric numeral systems (tANS) with a LUT decoder and K interleaved streams.

This is the coder of arXiv:2406.06237 ("Efficient Neural Compression with
Inference-time Decoding"): the decoder is a single table look-up plus a bit
read per symbol, which is what a microcontroller / FPGA / SIMD runtime wants.

Tables
------
``L = 2**table_log`` states (``table_log`` in 6..12 is the intended range;
5..15 is accepted: below 5 the FSE spread step is not defined, above 15 the
decoder's ``new_state_base`` no longer fits ``uint16`` together with the
encoder's 16-bit ``deltaNbBits`` trick).  The frequencies ``f_s`` must sum to
``L`` exactly (see :func:`megabit.entropy.freq.quantize_frequencies`).

*Spread* (FSE): ``step = L/2 + L/8 + 3`` (odd, hence coprime with ``L``);
starting at position 0, symbol ``s = 0, 1, ...`` is written ``f_s`` times at
``pos``, ``pos = (pos + step) mod L``.

*Decode LUT* -- one entry per state ``u`` in ``[0, L)`` (the state ``x = L + u``)::

    s              = spread[u]
    j              = f_s + (number of positions u' < u with spread[u'] = s)   # j in [f_s, 2 f_s)
    nb_bits[u]     = table_log - floor(log2(j))                               # 0 .. table_log
    new_state_base[u] = (j << nb_bits[u]) - L                                 # in [0, L)
    symbol[u]      = s

  Decoding a symbol:  ``s = symbol[u];  u = new_state_base[u] + read_bits(nb_bits[u])``.
  The LUT is exported as three plain arrays (``dec_symbol`` uint8,
  ``dec_nb_bits`` uint8, ``dec_new_state_base`` uint16) and as one packed
  ``uint32`` array ``dec_lut[u] = symbol | nb_bits << 8 | new_state_base << 16``
  which, stored little-endian, is byte-identical to the C struct
  ``struct { uint8_t symbol; uint8_t nb_bits; uint16_t new_state_base; } lut[L];``
  (``4 * L`` bytes: 256 B for table_log 6 ... 16 KiB for table_log 12).

*Encoder tables* (FSE layout, encoder state ``x`` in ``[L, 2L)``)::

    maxBitsOut_s = table_log - floor(log2(f_s - 1))   (f_s >= 2);   table_log (f_s == 1)
    delta_nb_bits[s]   = (maxBitsOut_s << 16) - (f_s << maxBitsOut_s)
    delta_find_state[s] = cdf[s] - f_s
    state_table[cdf[s] + r] = L + (position of the r-th occurrence of s in the spread)

    encode s:  nb = (x + delta_nb_bits[s]) >> 16;  emit the nb low bits of x;
               x = state_table[(x >> nb) + delta_find_state[s]]

Exact invertibility: encode is a bijection step by step, so
``decode(encode(x)) == x`` for every symbol sequence whose symbols all have
``f_s >= 1``.  Cost per symbol is ``-log2(f_s/L)`` bits up to the tANS
approximation error, which shrinks as ``L`` grows relative to the alphabet.

Interleaving (K streams)
------------------------
Symbol ``i`` belongs to stream ``i % K``; each stream has its own state, all
streams start (encoder side) in state ``x = L`` (``u = 0``).  The encoder
processes ``i = n-1, ..., 0``; the decoder processes ``i = 0, ..., n-1`` in
lockstep rounds (round ``r`` decodes symbols ``rK .. rK+K-1``, one per stream),
as a K-lane SIMD / hardware decoder would.  All streams share ONE bitstream
stored in exactly the order the lockstep decoder consumes it: the bits read
for symbol ``i`` (``nb_bits`` of them, LSB first) immediately follow those of
symbol ``i-1``.  (A SIMD decoder gets per-lane bit offsets by a prefix sum
of the K ``nb_bits`` of a round.)

Byte layout (all little-endian)
-------------------------------
::

    offset  size  field
    0       4     magic b"tANS"
    4       1     format version = 1
    5       1     table_log
    6       2     n_streams K (u16, >= 1)
    8       4     n_symbols n (u32)
    12      4     n_bits: number of valid bits in the bitstream (u32)
    16      4     crc32 (zlib) of bytes [0, 16) followed by bytes [20, end)
    20      2*K   initial decoder state u_k = x_k - L of stream k (u16, < L)
    20+2K   ceil(n_bits/8)  bitstream, LSB-first: bit b is (byte[b >> 3] >> (b & 7)) & 1;
                    unused high bits of the last byte are zero

The payload length must be exactly ``20 + 2K + ceil(n_bits/8)``.  The frequency
table is *not* part of the payload (store it once, e.g. with
:func:`megabit.entropy.freq.freqs_to_bytes`).

Validation: decoding raises ``ValueError`` on a bad magic/version, a
table_log / n_streams / n_symbols different from the caller's, a wrong length,
a CRC mismatch, a state ``>= L``, nonzero padding bits, or if after decoding
the bitstream was not consumed exactly or some stream did not return to the
encoder's initial state ``u = 0``.  The decoder never reads outside the
buffer (reads past the end yield zeros and are then reported), so corrupted
input cannot hang or crash it, with or without the CRC check.

Example
-------
>>> import numpy as np
>>> from megabit.entropy import tans, quantize_frequencies
>>> x = np.array([0, 1, 1, 2, 1, 1, 0, 1] * 50, dtype=np.uint8)
>>> freqs = quantize_frequencies(np.bincount(x), 8)
>>> payload = tans.encode(x, freqs, 8, n_streams=4)
>>> len(payload)     # 20-byte header + 4 x 2-byte states + 65 bytes (entropy 1.30 bits/symbol)
93
>>> bool(np.array_equal(tans.decode(payload, freqs, 8, len(x), n_streams=4), x))
True
>>> t = tans.build_tables(freqs, 8)
>>> int(t.dec_symbol[0]), int(t.dec_nb_bits[0]), int(t.dec_new_state_base[0])
(0, 2, 0)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import _common as C
from .freq import cdf_from_freqs, precision_of

__all__ = ["TansTables", "build_tables", "encode", "decode", "MAGIC", "MIN_TABLE_LOG", "MAX_TABLE_LOG"]

MAGIC = b"tANS"
MIN_TABLE_LOG = 5
MAX_TABLE_LOG = 15


@dataclass(frozen=True)
class TansTables:
    """tANS tables for one frequency table (all arrays read-only numpy arrays).

    Attributes
    ----------
    table_log, L : table size ``L = 2**table_log``.
    freqs : uint32[n], ``sum == L``.
    cdf : int64[n+1], exclusive cumulative frequencies.
    spread : uint8[L], symbol at each state ``u``.
    enc_state_table : uint16[L], next encoder state ``x in [L, 2L)``.
    enc_delta_nb_bits : int64[n], FSE ``deltaNbBits``.
    enc_delta_find_state : int64[n], FSE ``deltaFindState``.
    dec_symbol : uint8[L]; dec_nb_bits : uint8[L]; dec_new_state_base : uint16[L].
    dec_lut : uint32[L], packed ``symbol | nb_bits << 8 | new_state_base << 16``.
    """

    table_log: int
    L: int
    freqs: np.ndarray
    cdf: np.ndarray
    spread: np.ndarray
    enc_state_table: np.ndarray
    enc_delta_nb_bits: np.ndarray
    enc_delta_find_state: np.ndarray
    dec_symbol: np.ndarray
    dec_nb_bits: np.ndarray
    dec_new_state_base: np.ndarray
    dec_lut: np.ndarray

    @property
    def lut_bytes(self) -> int:
        """Size of the decode LUT a runtime has to hold (4 bytes per state)."""
        return 4 * self.L


def _check_table_log(freqs, table_log) -> tuple[np.ndarray, int]:
    f = np.asarray(freqs)
    p = precision_of(f)
    if table_log is None:
        table_log = p
    if not isinstance(table_log, (int, np.integer)) or not MIN_TABLE_LOG <= int(table_log) <= MAX_TABLE_LOG:
        raise ValueError(f"table_log must be an int in [{MIN_TABLE_LOG}, {MAX_TABLE_LOG}], got {table_log!r}")
    if p != int(table_log):
        raise ValueError(f"sum(freqs) = 2**{p} but table_log = {table_log}")
    if f.size > 256:
        raise ValueError(f"tANS supports alphabets of at most 256 symbols, got {f.size}")
    return f.astype(np.int64), int(table_log)


def build_tables(freqs, table_log: int | None = None) -> TansTables:
    """Build spread, encoder tables and the decode LUT (see module docstring)."""
    f, table_log = _check_table_log(freqs, table_log)
    return _build_cached(f.tobytes(), table_log)


@functools.lru_cache(maxsize=64)
def _build_cached(fbytes: bytes, table_log: int) -> TansTables:
    f = np.frombuffer(fbytes, dtype=np.int64)
    n = f.size
    L = 1 << table_log
    cdf = cdf_from_freqs(f)
    # FSE spread
    step = (L >> 1) + (L >> 3) + 3
    positions = (np.arange(L, dtype=np.int64) * step) & (L - 1)
    spread = np.empty(L, dtype=np.uint8)
    spread[positions] = np.repeat(np.arange(n), f).astype(np.uint8)
    # order: positions grouped by symbol, increasing within a symbol
    order = np.argsort(spread, kind="stable")
    rank = np.arange(L, dtype=np.int64) - cdf[spread[order].astype(np.int64)]
    j = np.empty(L, dtype=np.int64)
    j[order] = f[spread[order].astype(np.int64)] + rank
    hb = np.frexp(j.astype(np.float64))[1].astype(np.int64) - 1  # floor(log2 j), exact
    nb = table_log - hb
    base = (j << nb) - L
    enc_state_table = (L + order).astype(np.uint16)
    # encoder deltas
    fm1 = np.maximum(f - 1, 1).astype(np.float64)
    hb_f = np.frexp(fm1)[1].astype(np.int64) - 1
    max_bits_out = np.where(f == 1, table_log, table_log - hb_f)
    delta_nb = np.where(f > 0, (max_bits_out << 16) - (f << max_bits_out), 0).astype(np.int64)
    delta_fs = (cdf[:-1] - f).astype(np.int64)
    dec_symbol = spread.copy()
    dec_nb = nb.astype(np.uint8)
    dec_base = base.astype(np.uint16)
    lut = dec_symbol.astype(np.uint32) | (dec_nb.astype(np.uint32) << 8) | (dec_base.astype(np.uint32) << 16)
    arrays = dict(
        freqs=f.astype(np.uint32),
        cdf=cdf,
        spread=spread,
        enc_state_table=enc_state_table,
        enc_delta_nb_bits=delta_nb,
        enc_delta_find_state=delta_fs,
        dec_symbol=dec_symbol,
        dec_nb_bits=dec_nb,
        dec_new_state_base=dec_base,
        dec_lut=lut,
    )
    for a in arrays.values():
        a.setflags(write=False)
    return TansTables(table_log=table_log, L=L, **arrays)


# ------------------------------------------------------------ reference ----


def _encode_python(sym: np.ndarray, t: TansTables, K: int):
    n = sym.size
    L = t.L
    st = t.enc_state_table.tolist()
    dnb = t.enc_delta_nb_bits.tolist()
    dfs = t.enc_delta_find_state.tolist()
    syms = sym.tolist()
    vals = [0] * n
    nbs = [0] * n
    states = [L] * K
    for i in range(n - 1, -1, -1):
        k = i % K
        x = states[k]
        s = syms[i]
        nb = (x + dnb[s]) >> 16
        vals[i] = x & ((1 << nb) - 1)
        nbs[i] = nb
        states[k] = st[(x >> nb) + dfs[s]]
    # pack the bits LSB-first in decode order (i = 0..n-1)
    nbs_a = np.asarray(nbs, dtype=np.int64)
    total = int(nbs_a.sum())
    if total:
        vals_a = np.asarray(vals, dtype=np.int64)
        owner = np.repeat(np.arange(n), nbs_a)
        start = np.repeat(np.cumsum(nbs_a) - nbs_a, nbs_a)
        bits = ((vals_a[owner] >> (np.arange(total) - start)) & 1).astype(np.uint8)
        stream = np.packbits(bits, bitorder="little").tobytes()
    else:
        stream = b""
    return stream, total, [x - L for x in states]


def _decode_python(stream: bytes, n_bits: int, t: TansTables, init: list, n: int):
    K = len(init)
    dsym = t.dec_symbol.tolist()
    dnb = t.dec_nb_bits.tolist()
    dbase = t.dec_new_state_base.tolist()
    states = list(init)
    out = bytearray(n)
    pos = 0
    for i in range(n):
        k = i % K
        u = states[k]
        nb = dnb[u]
        v = 0
        if nb:
            b = pos >> 3
            v = (int.from_bytes(stream[b : b + 3], "little") >> (pos & 7)) & ((1 << nb) - 1)
            pos += nb
        out[i] = dsym[u]
        states[k] = dbase[u] + v
    return np.frombuffer(bytes(out), dtype=np.uint8).copy(), pos, states


# ---------------------------------------------------------------- numba ----


def _encode_kernel(sym, K, L, st, dnb, dfs, init_states):
    n = sym.shape[0]
    vals = np.empty(n, dtype=np.uint16)
    nbs = np.empty(n, dtype=np.uint8)
    states = np.empty(K, dtype=np.int64)
    for k in range(K):
        states[k] = L
    total = 0
    if n > 0:
        k = (n - 1) % K
        for i in range(n - 1, -1, -1):
            x = states[k]
            s = sym[i]
            nb = (x + dnb[s]) >> 16
            vals[i] = x & ((1 << nb) - 1)
            nbs[i] = nb
            total += nb
            states[k] = st[(x >> nb) + dfs[s]]
            k -= 1
            if k < 0:
                k = K - 1
    for k in range(K):
        init_states[k] = states[k] - L
    out = np.zeros((total + 7) >> 3, dtype=np.uint8)
    acc = 0
    cnt = 0
    p = 0
    for i in range(n):
        acc |= np.int64(vals[i]) << cnt
        cnt += nbs[i]
        while cnt >= 8:
            out[p] = acc & 255
            acc >>= 8
            cnt -= 8
            p += 1
    if cnt > 0:
        out[p] = acc & 255
    return out, total


def _decode_kernel(stream, lut, init_states, n, max_nb, out):
    """Lockstep K-stream LUT decoder. Returns (bits consumed, all states back to 0)."""
    K = init_states.shape[0]
    states = init_states.copy()
    nbytes = stream.shape[0]
    acc = np.int64(0)
    cnt = 0
    p = 0
    k = 0
    for i in range(n):
        if cnt < max_nb:
            while cnt <= 48:
                if p < nbytes:
                    acc |= np.int64(stream[p]) << cnt
                p += 1
                cnt += 8
        t = lut[states[k]]
        out[i] = t & 255
        nb = (t >> 8) & 255
        states[k] = (t >> 16) + (acc & ((np.int64(1) << nb) - 1))
        acc >>= nb
        cnt -= nb
        k += 1
        if k == K:
            k = 0
    ok = True
    for k in range(K):
        if states[k] != 0:
            ok = False
    return 8 * p - cnt, ok


def _decode_kernel_k1(stream, lut, init_state, n, max_nb, out):
    """Single-stream specialization (state kept in a register)."""
    nbytes = stream.shape[0]
    acc = np.int64(0)
    cnt = 0
    p = 0
    u = np.int64(init_state)
    for i in range(n):
        if cnt < max_nb:
            while cnt <= 48:
                if p < nbytes:
                    acc |= np.int64(stream[p]) << cnt
                p += 1
                cnt += 8
        t = lut[u]
        out[i] = t & 255
        nb = (t >> 8) & 255
        u = (t >> 16) + (acc & ((np.int64(1) << nb) - 1))
        acc >>= nb
        cnt -= nb
    return 8 * p - cnt, u == 0


_encode_nb = C.jit(_encode_kernel)
_decode_nb = C.jit(_decode_kernel)
_decode_nb_k1 = C.jit(_decode_kernel_k1)


# ------------------------------------------------------------------ API ----


def encode(symbols, freqs, table_log: int | None = None, n_streams: int = 1, *, backend: str | None = None) -> bytes:
    """Encode ``symbols`` (integers in ``[0, len(freqs))``, any shape, flattened in C order).

    ``freqs`` must sum to ``2**table_log`` and be >= 1 for every symbol that
    occurs. ``table_log=None`` infers it from ``sum(freqs)``.  Returns the
    self-describing payload documented in the module docstring.
    """
    f, table_log = _check_table_log(freqs, table_log)
    K = C.check_n_streams(n_streams)
    sym = C.as_symbols(symbols, f)
    t = _build_cached(f.tobytes(), table_log)
    if C.resolve_backend(backend) == "numba":
        init = np.empty(K, dtype=np.int64)
        stream, total = _encode_nb(sym, K, t.L, t.enc_state_table, t.enc_delta_nb_bits, t.enc_delta_find_state, init)
        stream = stream.tobytes()
        total = int(total)
    else:
        stream, total, init = _encode_python(sym, t, K)
    body = np.asarray(init, dtype="<u2").tobytes() + stream
    return C.pack_header(MAGIC, table_log, K, sym.size, total, body)


def decode(
    data,
    freqs,
    table_log: int | None = None,
    n_symbols: int | None = None,
    n_streams: int | None = 1,
    *,
    backend: str | None = None,
    check_crc: bool = True,
) -> np.ndarray:
    """Decode a payload produced by :func:`encode`; returns ``uint8[n_symbols]``.

    ``table_log`` / ``n_symbols`` / ``n_streams`` are checked against the
    header (pass ``None`` to take them from the header).  Raises ``ValueError``
    on any inconsistency or detected corruption (see module docstring).
    """
    f, table_log = _check_table_log(freqs, table_log)
    log, K, n, n_bits, body = C.unpack_header(data, MAGIC, check_crc)
    C.check_match("table_log", log, table_log)
    C.check_match("n_symbols", n, n_symbols)
    C.check_match("n_streams", K, n_streams)
    n_bytes = (n_bits + 7) >> 3
    if len(body) != 2 * K + n_bytes:
        raise ValueError(
            f"payload length mismatch: expected {C.HEADER_SIZE + 2 * K + n_bytes} bytes, got {C.HEADER_SIZE + len(body)}"
        )
    t = _build_cached(f.tobytes(), table_log)
    init = np.frombuffer(body[: 2 * K], dtype="<u2").astype(np.int64)
    if np.any(init >= t.L):
        raise ValueError("corrupted payload: initial state out of range")
    stream = np.frombuffer(body[2 * K :], dtype=np.uint8)
    if n_bits & 7 and stream[-1] >> (n_bits & 7):
        raise ValueError("corrupted payload: nonzero padding bits")
    if n > 0 and n_bits > n * table_log:
        raise ValueError("corrupted payload: more bits than symbols can consume")
    if C.resolve_backend(backend) == "numba":
        out = np.empty(n, dtype=np.uint8)
        if K == 1:
            consumed, ok = _decode_nb_k1(stream, t.dec_lut, int(init[0]), n, table_log, out)
        else:
            consumed, ok = _decode_nb(stream, t.dec_lut, init, n, table_log, out)
    else:
        out, consumed, states = _decode_python(bytes(stream), n_bits, t, init.tolist(), n)
        ok = all(s == 0 for s in states)
    if consumed != n_bits:
        raise ValueError(f"corrupted payload: decoder consumed {consumed} bits, payload has {n_bits}")
    if not ok:
        raise ValueError("corrupted payload: decoder did not return to the initial state")
    return out
