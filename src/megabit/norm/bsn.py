"""Layer-shared Bit-Shift Normalization (BSN).

BatchNorm after a conv computes, per channel c, ``y = a_c * acc + d_c`` (``a_c = γ_c/σ_c``,
``d_c = β_c - a_c μ_c``). BSN keeps **one power of two per layer** and an integer offset per
channel, applied to the integer accumulator:

    y = (acc + o_c) * 2^-k          (integer path: u = (acc + o_c) >> (k - 2) gives floor(4y))

Stored per layer: the shift ``k`` (``shift_bits``, default 4 bits, k ∈ [0, 15]) and ``C`` offsets
``o_c`` (``offset_bits`` each, default 12, signed). Both are counted in ``megabit budget``.

Conversion from a trained BN layer (``BitShiftNorm.from_batchnorm``), [I] our reading of
arXiv 2501.05097 (the summaries say "0.9-quantile of the channel scales, 4-bit shift"):

1. channels with ``a_c < 0`` are flipped (their weights negated, which is exact for symmetric
   codes), so every channel has a positive scale;
2. ``2^-k`` is the power of two nearest (in log2) to the ``quantile`` (default 0.9) of ``|a_c|``;
3. ``o_c`` aligns the middle HWMSB threshold (y = 1/2) of BN and BSN for that channel:
   ``o_c = 2^k / 2 - (1/2 - d_c) / |a_c|``. Other choices (matching the channel mean) are possible;
   phase-2 fine-tuning moves the offsets anyway.

Calibrated conversion (``BitShiftNorm.fit_``, [I] ours, not in the paper; ``NQE.convert_to_bsn(calib)``,
``train-classifier --bsn-init fit``, its default since session 30): on calibration images, for each shift k near the quantile's
(±``shift_search``) and each channel, the offset is the one of a grid that minimises the squared
error between the BSN layer's activation codes and the BatchNorm network's codes; the shift with
the least total error wins. Layers are converted in order, each fed by the converted layers before it.

Offsets are trained as floats and rounded with an STE, clamped to the signed ``offset_bits`` range.

>>> import torch
>>> bsn = BitShiftNorm(4, shift=3)
>>> bsn(torch.tensor([[8.0], [0.0], [-8.0], [4.0]]).reshape(1, 4, 1, 1)).flatten()
tensor([ 1.0000,  0.0000, -1.0000,  0.5000], grad_fn=<ViewBackward0>)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..quant.ste import round_ste

__all__ = ["BitShiftNorm"]


class BitShiftNorm(nn.Module):
    def __init__(self, channels: int, shift: int = 0, shift_bits: int = 4, offset_bits: int = 12):
        super().__init__()
        if not 0 <= shift < (1 << shift_bits):
            raise ValueError(f"shift {shift} does not fit in {shift_bits} bits")
        self.channels, self.shift_bits, self.offset_bits = channels, shift_bits, offset_bits
        self.register_buffer("shift", torch.tensor(int(shift)))
        self.offset = nn.Parameter(torch.zeros(channels))

    @property
    def offset_limit(self) -> int:
        return (1 << (self.offset_bits - 1)) - 1

    def int_offsets(self) -> torch.Tensor:
        """The stored integer offsets o_c (accumulator units)."""
        lim = self.offset_limit
        o = torch.round(self.offset.detach().float() * 2.0 ** int(self.shift))
        return o.clamp(-lim - 1, lim).to(torch.int64)

    def forward(self, acc: torch.Tensor) -> torch.Tensor:
        # The trainable parameter is the offset in *output* units (o_c * 2^-k), so that one
        # learning rate suits every layer whatever its shift; the stored value is the integer o_c.
        # 2^k as a tensor op, not int(self.shift): torch.compile then traces BSN without a graph break
        lim = self.offset_limit
        scale = torch.exp2(self.shift.to(self.offset.dtype))
        o = round_ste(self.offset * scale).clamp(-lim - 1, lim)
        return (acc + o.to(acc.dtype).reshape(1, -1, 1, 1)) * scale.reciprocal().to(acc.dtype)

    @torch.no_grad()
    def init_from_batchnorm(self, bn: nn.BatchNorm2d, quantile: float = 0.9) -> torch.Tensor:
        """Set shift and offsets from a trained BN; returns the per-channel sign flips (+1/-1).

        The caller must multiply the conv's latent weights of channel c by the returned sign.
        """
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        d = bn.bias - a * bn.running_mean
        sign = torch.where(a < 0, -torch.ones_like(a), torch.ones_like(a))
        aa = a.abs().clamp_min(1e-12)
        q = torch.quantile(aa.float(), quantile)
        k = int(round(-math.log2(float(q))))
        k = max(0, min((1 << self.shift_bits) - 1, k))
        self.shift.fill_(k)
        o = (2.0**k) / 2 - (0.5 - d) / aa
        lim = self.offset_limit
        self.offset.copy_(o.clamp(-lim - 1, lim) * 2.0**-k)
        return sign

    @torch.no_grad()
    def fit_(self, acc: torch.Tensor, target: torch.Tensor, codes_fn, shift_search: int = 2,
             grid: int = 65, chunk: int = 16, loss: str = "mse") -> dict:
        """Fit shift and offsets to reproduce ``target`` codes from accumulators ``acc`` (in place).

        ``acc`` and ``target``: [C, S] samples per channel (channels already sign-flipped);
        ``codes_fn(y)`` maps BSN outputs to activation codes (e.g. HWMSB). Shifts k0-shift_search ..
        k0+shift_search (k0: the current shift) are tried; for each, every channel's offset is searched
        on a grid of ``grid`` values over every offset that puts part of the channel inside the code
        range, then refined down to integer accumulator units [I]. ``loss``: "mse" (squared code error, default
        [I]) or "mismatch" (fraction of differing codes). Returns the chosen shift and per-shift errors.
        """
        if loss not in ("mse", "mismatch"):
            raise ValueError(f"loss must be 'mse' or 'mismatch', got {loss!r}")
        acc, target = acc.float(), target.float()
        lim = self.offset_limit
        k0 = int(self.shift)
        kmax = (1 << self.shift_bits) - 1
        best = None
        errors = {}
        u = torch.linspace(0.0, 1.0, grid, device=acc.device)
        fine = torch.linspace(-1.0, 1.0, 33, device=acc.device)
        for k in range(max(0, k0 - shift_search), min(kmax, k0 + shift_search) + 1):
            y0 = acc * 2.0**-k  # [C, S] without offset
            # every offset that puts some of the channel's inputs inside the code range [0, 1)
            lo = -torch.quantile(y0, 0.995, dim=1) - 0.25
            hi = 1.25 - torch.quantile(y0, 0.005, dim=1)
            tot, offs = 0.0, torch.empty(acc.shape[0], device=acc.device)
            for c0 in range(0, acc.shape[0], chunk):
                y, t = y0[c0 : c0 + chunk, None, :], target[c0 : c0 + chunk, None, :]
                l_, h_ = lo[c0 : c0 + chunk, None], hi[c0 : c0 + chunk, None]
                cand, step = l_ + (h_ - l_) * u[None, :], (h_ - l_) / (grid - 1)  # [c, G] output units
                while True:  # a coarse grid, then finer ones around the best, down to integer offsets
                    cand = torch.round(cand * 2.0**k).clamp(-lim - 1, lim) * 2.0**-k
                    diff = codes_fn(y + cand[:, :, None]) - t  # [c, G, S]
                    err = (diff.pow(2) if loss == "mse" else (diff != 0).float()).mean(2)  # [c, G]
                    e, j = err.min(1)
                    best_c = cand.gather(1, j[:, None])
                    if float(step.max()) * 2.0**k <= 1.0:
                        break
                    cand, step = best_c + step * fine[None, :], step / 16
                offs[c0 : c0 + chunk] = best_c[:, 0]
                tot += float(e.sum())
            errors[k] = tot / acc.shape[0]
            if best is None or tot < best[0]:
                best = (tot, k, offs)
        _, k, offs = best
        self.shift.fill_(k)
        self.offset.copy_(offs)
        return {"shift": k, "quantile_shift": k0, "code_mse": {str(kk): round(v, 5) for kk, v in errors.items()}}

    def extra_repr(self) -> str:
        return f"{self.channels}, shift={int(self.shift)}, offset_bits={self.offset_bits}"
