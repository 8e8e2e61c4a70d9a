"""Layer sensitivity of FMPQ (arXiv 2506.01221): fractional change of the RD loss.

For layer ``n`` and bit-width ``b``, only layer ``n`` is quantized (per-channel absmax, b bits), all
others stay float, and::

    zeta_n(b) = (RD_n(b) - RD_fp) / RD_fp,     RD = lambda * 255^2 * MSE + bpp

on a fixed calibration batch, in eval mode (rounding, no noise) so that the table is deterministic.
The table also keeps the rate and distortion of every entry, so that a search can re-score it with
another criterion (:meth:`SensitivityTable.rescored`): ``"rd"`` is the paper's; ``"bd-proxy"`` [I]
(megabit's, not in the paper) is ``(R_n(b) - R_fp)/R_fp + kappa (D_n(b) - D_fp)/D_fp``, a first-order
estimate of the BD-rate change (at typical RD slopes 1 % more MSE costs about as much as 1 % more
rate, kappa = 1). It does not let a rate increase hide behind a distortion-dominated RD loss, which
the paper's criterion does when lambda * 255^2 * MSE is most of the loss (an under-trained codec).
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

from .quantize import LayerInfo, check_granularity, layer_infos, quantizable_layers, temporarily_quantized
from .rd import check_codec_contract, rd_loss_value

__all__ = ["SensitivityTable", "layer_sensitivity", "SENSITIVITY_FORMAT", "CRITERIA"]

CRITERIA = ("rd", "bd-proxy")

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

    @property
    def granularity(self) -> str:
        """Scale granularity the table was measured with (``"channel"`` for tables of older versions)."""
        return str(self.meta.get("granularity", "channel"))

    def zeta_of(self, name: str, b: int) -> float:
        return float(self.zeta[[li.name for li in self.layers].index(name), self.bits.index(b)])

    def rescored(self, criterion: str = "rd", kappa: float = 1.0) -> "SensitivityTable":
        """The same table with zeta computed by ``criterion`` (see the module docstring)."""
        if criterion == "rd":
            return self
        if criterion != "bd-proxy":
            raise ValueError(f"unknown sensitivity criterion {criterion!r} (choose from {', '.join(CRITERIA)})")
        if not kappa >= 0:
            raise ValueError(f"kappa must be >= 0, got {kappa}")
        m = self.meta
        if "bpp" not in m or "mse" not in m or "rd_float_terms" not in m:
            raise ValueError("this sensitivity table has no per-entry rate/distortion (made by an older megabit): "
                             "recompute it to use criterion 'bd-proxy'")
        r = np.asarray(m["bpp"], dtype=np.float64)
        d = np.asarray(m["mse"], dtype=np.float64)
        r0, d0 = float(m["rd_float_terms"]["bpp"]), float(m["rd_float_terms"]["mse"])
        if r.shape != self.zeta.shape or d.shape != self.zeta.shape or not (r0 > 0 and d0 > 0):
            raise ValueError("corrupted sensitivity file: rate/distortion entries do not match the table")
        zeta = (r - r0) / r0 + kappa * (d - d0) / d0
        return SensitivityTable(self.layers, self.bits, zeta, self.rd_float, self.lmbda,
                                {**m, "criterion": criterion, "kappa": kappa})

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
                      progress: Callable[[int, int, str], None] | None = None,
                      granularity: str = "channel") -> SensitivityTable:
    """Compute the zeta table of ``model`` on the calibration batch ``x`` ([B, 3, H, W] in [0, 1]),
    each layer quantized with one scale per output channel or (``granularity="tensor"``) per layer."""
    check_codec_contract(model)
    check_granularity(granularity)
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
    rds, bpps, mses = np.zeros_like(zeta), np.zeros_like(zeta), np.zeros_like(zeta)
    for n, li in enumerate(infos):
        for k, b in enumerate(bits):
            with temporarily_quantized(all_layers[li.name], b, granularity):
                terms = rd_loss_value(model, x, lmbda)
            rd = terms["loss"]
            rds[n, k], bpps[n, k], mses[n, k] = rd, terms["bpp"], terms["mse"]
            zeta[n, k] = (rd - rd_fp["loss"]) / rd_fp["loss"]
        if progress is not None:
            progress(n + 1, len(infos), li.name)
    meta = {"calibration_shape": list(x.shape), "rd_float_terms": rd_fp, "rd": rds.tolist(),
            "bpp": bpps.tolist(), "mse": mses.tolist(), "criterion": "rd", "granularity": granularity,
            "seconds": round(time.perf_counter() - t0, 2), "forward_passes": 1 + len(infos) * len(bits)}
    return SensitivityTable(infos, bits, zeta, rd_fp["loss"], float(lmbda), meta)
