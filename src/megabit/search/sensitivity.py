"""Layer sensitivity of FMPQ (arXiv 2506.01221): fractional change of the RD loss.

For layer ``n`` and bit-width ``b``, only layer ``n`` is quantized (per-channel absmax, b bits), all
others stay float, and::

    zeta_n(b) = (RD_n(b) - RD_fp) / RD_fp,     RD = lambda * 255^2 * MSE + bpp

on a fixed calibration batch, in eval mode (rounding, no noise) so that the table is deterministic.
Cost: ``n_layers * len(bits)`` forward passes over the calibration batch, done once; every later
search step only reads the table.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from torch import Tensor, nn

from megabit.utils import atomic_write_text

from .quantize import LayerInfo, layer_infos, quantizable_layers, temporarily_quantized
from .rd import check_codec_contract, rd_loss_value

__all__ = ["SensitivityTable", "layer_sensitivity", "SENSITIVITY_FORMAT"]

SENSITIVITY_FORMAT = "megabit-fmpq-sensitivity"


@dataclass
class SensitivityTable:
    """``zeta[n][k]`` for layer ``layers[n]`` at ``bits[k]``; ``rd_float`` the float model's RD loss."""

    layers: list[LayerInfo]
    bits: list[int]
    zeta: np.ndarray
    rd_float: float
    lmbda: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.zeta = np.asarray(self.zeta, dtype=np.float64)
        if self.zeta.shape != (len(self.layers), len(self.bits)):
            raise ValueError(f"zeta has shape {self.zeta.shape}, expected ({len(self.layers)}, {len(self.bits)})")
        if list(self.bits) != sorted(set(self.bits)) or not self.bits:
            raise ValueError("bits must be a non-empty ascending list without repeats")
        if not np.all(np.isfinite(self.zeta)):
            raise ValueError("zeta contains non-finite values")

    def zeta_of(self, name: str, b: int) -> float:
        return float(self.zeta[[li.name for li in self.layers].index(name), self.bits.index(b)])

    def to_dict(self) -> dict[str, Any]:
        return {"format": SENSITIVITY_FORMAT, "version": 1, "lmbda": self.lmbda, "rd_float": self.rd_float,
                "bits": list(self.bits), "layers": [li.to_dict() for li in self.layers],
                "zeta": [[float(v) for v in row] for row in self.zeta], "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Any) -> "SensitivityTable":
        if not isinstance(d, dict) or d.get("format") != SENSITIVITY_FORMAT:
            raise ValueError("not a megabit FMPQ sensitivity file")
        if d.get("version") != 1:
            raise ValueError(f"unsupported sensitivity file version {d.get('version')!r}")
        try:
            return cls([LayerInfo.from_dict(x) for x in d["layers"]], [int(b) for b in d["bits"]],
                       np.asarray(d["zeta"], dtype=np.float64), float(d["rd_float"]), float(d["lmbda"]),
                       dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"corrupted sensitivity file: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SensitivityTable":
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: corrupted sensitivity file (not JSON: {e.msg})") from None
        return cls.from_dict(d)


def layer_sensitivity(model: nn.Module, x: Tensor, lmbda: float, bits: Sequence[int] = range(2, 9),
                      layers: Sequence[str] | None = None,
                      progress: Callable[[int, int, str], None] | None = None) -> SensitivityTable:
    """Compute the zeta table of ``model`` on the calibration batch ``x`` ([B, 3, H, W] in [0, 1])."""
    check_codec_contract(model)
    t0 = time.perf_counter()
    rd_fp = rd_loss_value(model, x, lmbda)
    if not rd_fp["loss"] > 0 or not math.isfinite(rd_fp["loss"]):
        raise ValueError(f"float RD loss must be positive and finite, got {rd_fp['loss']}")
    all_layers = dict(quantizable_layers(model))
    infos = [li for li in layer_infos(model) if layers is None or li.name in layers]
    if layers is not None and len(infos) != len(set(layers)):
        raise ValueError("some requested layers are not quantizable layers of the model")
    bits = sorted(set(int(b) for b in bits))
    zeta = np.zeros((len(infos), len(bits)))
    rds = np.zeros_like(zeta)
    for n, li in enumerate(infos):
        for k, b in enumerate(bits):
            with temporarily_quantized(all_layers[li.name], b):
                rd = rd_loss_value(model, x, lmbda)["loss"]
            rds[n, k] = rd
            zeta[n, k] = (rd - rd_fp["loss"]) / rd_fp["loss"]
        if progress is not None:
            progress(n + 1, len(infos), li.name)
    meta = {"calibration_shape": list(x.shape), "rd_float_terms": rd_fp, "rd": rds.tolist(),
            "seconds": round(time.perf_counter() - t0, 2), "forward_passes": 1 + len(infos) * len(bits)}
    return SensitivityTable(infos, bits, zeta, rd_fp["loss"], float(lmbda), meta)
