"""Exact bit budget and raw bit-packing of an integer NQE network.

What is stored (the on-chip memory image), in this order, as one little-endian bit stream
(bit i of the stream is bit ``i % 8`` of byte ``i // 8``, LSB first):

for each conv layer:
    weights   ``n_weights x ceil(log2(levels))`` bits: level *index* (code → position in
              ``code_range(levels)``), row-major [Cout, Cin/groups, k, k]
    shift     ``shift_bits`` bits (unsigned k); per-channel BSN ([I], ``bsn_granularity="channel"``):
              ``Cout x shift_bits``
    mantissa  only with ``bsn_mantissa_bits`` B > 0: ``B`` bits (unsigned m), or ``Cout x B`` per channel
    offsets   ``Cout x offset_bits`` bits (two's complement o_c)
head:
    weights   ``classes x C x ceil(log2(head_levels))`` bits
    bias      ``classes x head_bias_bits`` bits (two's complement)

Nothing else is needed to run the network: the architecture (channels, groups, kernel, pool,
levels) is fixed by the preset, i.e. it is "hardware", not memory. The packed payload is
``ceil(total_bits / 8)`` bytes; ``budget()`` returns ``total_bits`` and tests assert both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.nqe import NQEConfig, layer_offset_bits, layer_shift_bits
from ..quant.weight import bits_per_code, code_range
from .integer import IntegerNQE, IntHead, IntLayer

__all__ = ["BudgetRow", "budget", "budget_table", "pack_bits", "unpack_bits", "pack_model", "unpack_model", "MBIT"]

MBIT = 1 << 20


@dataclass
class BudgetRow:
    name: str
    kind: str
    weights: int
    levels: int
    bits_per_weight: int
    weight_bits: int
    norm_bits: int
    other_bits: int

    @property
    def total(self) -> int:
        return self.weight_bits + self.norm_bits + self.other_bits

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "weights": self.weights, "levels": self.levels,
                "bits_per_weight": self.bits_per_weight, "weight_bits": self.weight_bits,
                "norm_bits": self.norm_bits, "other_bits": self.other_bits, "total_bits": self.total}


def bsn_scale_count(cfg: NQEConfig, channels: int) -> int:
    """How many (shift, mantissa) pairs a BSN layer stores: 1, or one per channel."""
    return channels if cfg.bsn_granularity == "channel" else 1


def write_scales(w: "_BitWriter", L, n: int, shift_bits: int, mantissa_bits: int) -> None:
    """A BSN layer's ``n`` shifts (``shift_bits`` each), then, with a mantissa, its ``n`` mantissas."""
    w.write(np.broadcast_to(np.asarray(L.shift, np.int64), (n,)).copy(), shift_bits)
    if mantissa_bits:
        w.write(np.broadcast_to(np.asarray(L.mant, np.int64), (n,)).copy(), mantissa_bits)


def read_scales(r: "_BitReader", n: int, shift_bits: int, mantissa_bits: int):
    """The inverse of :func:`write_scales`: (shift, mant), ints when ``n == 1``, else int64 arrays."""
    shift = r.read(n, shift_bits)
    mant = r.read(n, mantissa_bits) if mantissa_bits else np.zeros(n, np.int64)
    return (int(shift[0]), int(mant[0])) if n == 1 else (shift, mant)


def budget(cfg: NQEConfig) -> list[BudgetRow]:
    """Per-layer stored bits of the deployed (BSN, integer) form of a config."""
    rows, cin = [], cfg.in_channels
    for i, L in enumerate(cfg.layers):
        n = L.out * (cin // L.groups) * L.kernel * L.kernel
        b = bits_per_code(L.levels)
        norm = (bsn_scale_count(cfg, L.out) * (layer_shift_bits(cfg, L) + cfg.bsn_mantissa_bits)
                + L.out * layer_offset_bits(cfg, L))
        kind = f"conv{L.kernel}x{L.kernel}" + (f" g{L.groups}" if L.groups > 1 else "")
        rows.append(BudgetRow(f"blocks.{i}", kind, n, L.levels, b, n * b, norm, 0))
        cin = L.out
    n = cfg.num_classes * cin
    b = bits_per_code(cfg.head_levels)
    rows.append(BudgetRow("head", "linear", n, cfg.head_levels, b, n * b, 0, cfg.num_classes * cfg.head_bias_bits))
    return rows


def budget_table(cfg: NQEConfig) -> dict:
    rows = budget(cfg)
    total = sum(r.total for r in rows)
    return {"model": cfg.name, "layers": [r.to_dict() for r in rows], "total_bits": total,
            "weight_bits": sum(r.weight_bits for r in rows), "n_weights": sum(r.weights for r in rows),
            "limit_bits": MBIT, "fits": total <= MBIT, "headroom_bits": MBIT - total,
            "packed_bytes": (total + 7) // 8}


class _BitWriter:
    def __init__(self):
        self.chunks: list[np.ndarray] = []

    def write(self, values: np.ndarray, bits: int, signed: bool = False) -> None:
        v = np.asarray(values, np.int64).reshape(-1)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if v.size and (v.min() < lo or v.max() > hi):
            raise ValueError(f"value out of range for {bits}-bit {'signed' if signed else 'unsigned'} field")
        u = v & ((1 << bits) - 1)
        self.chunks.append(((u[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1))

    def bits(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.uint8)


class _BitReader:
    def __init__(self, bits: np.ndarray):
        self.b, self.pos = bits, 0

    def read(self, count: int, bits: int, signed: bool = False) -> np.ndarray:
        need = count * bits
        if self.pos + need > len(self.b):
            raise ValueError("packed weights are truncated")
        m = self.b[self.pos : self.pos + need].reshape(count, bits).astype(np.int64)
        self.pos += need
        v = (m << np.arange(bits)).sum(1)
        if signed:
            v = np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
        return v


def pack_bits(bits: np.ndarray) -> bytes:
    return np.packbits(bits, bitorder="little").tobytes()


def unpack_bits(data: bytes, n_bits: int) -> np.ndarray:
    arr = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    if len(arr) < n_bits:
        raise ValueError(f"packed weights are truncated ({len(arr)} of {n_bits} bits)")
    return arr[:n_bits]


def _codes_to_index(codes: np.ndarray, levels: int) -> np.ndarray:
    cr = np.asarray(code_range(levels))
    idx = np.searchsorted(cr, codes.reshape(-1))
    if np.any(idx >= len(cr)) or np.any(cr[np.minimum(idx, len(cr) - 1)] != codes.reshape(-1)):
        raise ValueError(f"codes outside the {levels}-level grid")
    return idx


def pack_model(net: IntegerNQE) -> tuple[bytes, int]:
    """Raw bit-packed memory image of an integer network: (bytes, exact bit count)."""
    cfg, w = net.cfg, _BitWriter()
    for L, spec in zip(net.layers, cfg.layers):
        w.write(_codes_to_index(L.codes, L.levels), bits_per_code(L.levels))
        write_scales(w, L, bsn_scale_count(cfg, len(L.offsets)), layer_shift_bits(cfg, spec), cfg.bsn_mantissa_bits)
        w.write(L.offsets, layer_offset_bits(cfg, spec), signed=True)
    w.write(_codes_to_index(net.head.codes, net.head.levels), bits_per_code(net.head.levels))
    w.write(net.head.bias, cfg.head_bias_bits, signed=True)
    bits = w.bits()
    return pack_bits(bits), int(len(bits))


def unpack_model(cfg: NQEConfig, data: bytes) -> IntegerNQE:
    """Inverse of :func:`pack_model` given the config (architecture)."""
    rows = budget(cfg)
    total = sum(r.total for r in rows)
    if len(data) != (total + 7) // 8:
        raise ValueError(f"packed model has {len(data)} bytes, config needs {(total + 7) // 8}")
    r = _BitReader(unpack_bits(data, total))
    layers, cin = [], cfg.in_channels
    for L in cfg.layers:
        shape = (L.out, cin // L.groups, L.kernel, L.kernel)
        cr = np.asarray(code_range(L.levels))
        idx = r.read(int(np.prod(shape)), bits_per_code(L.levels))
        if idx.max(initial=0) >= len(cr):
            raise ValueError("packed weights hold an index outside the level grid")
        codes = cr[idx].reshape(shape).astype(np.int8)
        shift, mant = read_scales(r, bsn_scale_count(cfg, L.out), layer_shift_bits(cfg, L), cfg.bsn_mantissa_bits)
        offs = r.read(L.out, layer_offset_bits(cfg, L), signed=True)
        layers.append(IntLayer(codes, L.levels, L.groups, L.pool, shift, offs, mant, cfg.bsn_mantissa_bits))
        cin = L.out
    cr = np.asarray(code_range(cfg.head_levels))
    idx = r.read(cfg.num_classes * cin, bits_per_code(cfg.head_levels))
    if idx.max(initial=0) >= len(cr):
        raise ValueError("packed head holds an index outside the level grid")
    head = IntHead(cr[idx].reshape(cfg.num_classes, cin).astype(np.int8), cfg.head_levels,
                   r.read(cfg.num_classes, cfg.head_bias_bits, signed=True))
    return IntegerNQE(cfg, layers, head)
