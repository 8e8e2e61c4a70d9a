"""FMPQ Algorithm 1: bit-width per layer from the sensitivity table and a tolerance ``beta``.

For every layer independently, scan ``b`` from ``b_max`` downward and keep lowering while
``zeta_n(b) < beta``; the layer gets the last ``b`` that passed (``b_max`` if none did).

[I] The public summaries say "assign the lowest b with zeta_n(b) < beta" while scanning downward.
With a non-monotone zeta (noise on a small calibration set) "stop at the first failure"
(``mode="scan"``, default) and "lowest passing b anywhere" (``mode="lowest"``) differ; scanning
protects against a lucky low-bit value below an unlucky middle one. Both make the model size a
non-increasing step function of ``beta``, which the adaptive search relies on.

>>> import numpy as np
>>> from megabit.search.quantize import LayerInfo
>>> from megabit.search.sensitivity import SensitivityTable
>>> t = SensitivityTable([LayerInfo("a", 100, 4, "Conv2d")], [2, 3, 4], np.array([[0.5, 0.05, 0.01]]), 1.0, 0.01)
>>> allocate(t, 0.02), allocate(t, 0.1), allocate(t, 1.0)
({'a': 4}, {'a': 3}, {'a': 2})
"""

from __future__ import annotations

from .quantize import plan_size_bits
from .sensitivity import SensitivityTable

__all__ = ["allocate", "size_at_beta", "uniform_bits"]


def allocate(table: SensitivityTable, beta: float, mode: str = "scan") -> dict[str, int]:
    """Layer name -> bit-width for tolerance ``beta``."""
    if mode not in ("scan", "lowest"):
        raise ValueError(f"mode must be 'scan' or 'lowest', got {mode!r}")
    out: dict[str, int] = {}
    bits = list(table.bits)
    for n, li in enumerate(table.layers):
        chosen = bits[-1]
        for k in range(len(bits) - 1, -1, -1):
            if table.zeta[n, k] < beta:
                chosen = bits[k]
            elif mode == "scan":
                break
        out[li.name] = chosen
    return out


def size_at_beta(table: SensitivityTable, beta: float, mode: str = "scan", scale_bits: int = 32) -> int:
    return plan_size_bits(table.layers, allocate(table, beta, mode), scale_bits, table.granularity)


def uniform_bits(table: SensitivityTable, b: int) -> dict[str, int]:
    return {li.name: int(b) for li in table.layers}
