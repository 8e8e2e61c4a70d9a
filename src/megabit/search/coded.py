"""Entropy-coded size of a quantized codec's weights: the bytes a packed file would hold.

``plan_size_bits`` counts every weight at its bit-width. Low-bit codes of trained layers are far from
uniform, so megabit's rANS (``megabit.entropy``) stores them in fewer bytes. Per layer the codes are
shifted to ``{0 .. 2^b - 2}``, a frequency table is built from their histogram and the layer is coded;
the layer keeps whichever is smaller, the coded payload plus its serialized table, or the raw
``b``-bit packing [I] (a packer would flag the choice with one byte per layer, counted here).
Every coded layer is decoded again and compared with its codes, so the size is of a file that works.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn

from megabit.entropy import decode_array, encode_array, entropy_bits, freqs_to_bytes

from .quantize import export_codes

__all__ = ["coded_size"]


def coded_size(model: nn.Module, coder: str = "rans", table_log: int = 16, scale_bits: int = 32) -> dict[str, Any]:
    """Per-layer and total sizes (bytes) of the weights of a :func:`prepare_quantized` model."""
    layers, total = {}, 0
    for name, d in export_codes(model).items():
        b = int(d["bits"])
        m = 2 ** (b - 1) - 1
        sym = (d["codes"].numpy().astype(np.int64).reshape(-1) + m)
        n = sym.size
        raw = math.ceil(n * b / 8)
        counts = np.bincount(sym, minlength=2 * m + 1)
        payload, freqs = encode_array(sym, coder=coder, table_log=max(table_log, math.ceil(math.log2(2 * m + 1)) + 1))
        if not np.array_equal(decode_array(payload, freqs, n_symbols=n), sym):  # pragma: no cover - coder bug
            raise RuntimeError(f"layer {name}: entropy-coded weights do not decode back")
        table = len(freqs_to_bytes(freqs))
        coded = len(payload) + table
        use = "ans" if coded < raw else "raw"
        scales = math.ceil(d["scale"].numel() * scale_bits / 8)
        size = min(coded, raw) + scales + 1
        layers[name] = {"bits": b, "n_weights": n, "entropy_bits_per_weight": round(entropy_bits(counts) / n, 4),
                        "raw_bytes": raw, "payload_bytes": len(payload), "table_bytes": table,
                        "scale_bytes": scales, "stored": use, "bytes": size}
        total += size
    n_w = sum(v["n_weights"] for v in layers.values())
    return {"coder": coder, "total_bytes": total, "bits_per_weight": round(8 * total / max(n_w, 1), 4),
            "layers": layers}
