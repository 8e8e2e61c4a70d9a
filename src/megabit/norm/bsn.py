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

Beyond the paper ([I], configurable; the default is the paper's layer-shared shift): ``granularity="channel"``
stores a shift per channel, and ``mantissa_bits=B`` (0..3) a B-bit mantissa ``m`` with each shift, so the
scale is ``(1 + m/2^B) * 2^-k``:

    y = (acc * M + o_c) * 2^-(k + B),  M = 2^B + m   (integer path: u = (acc * M + o_c) >> (k + B - 2))

``M`` has at most B + 1 bits: a shift-and-add per output, no multiplier array. Stored: ``shift_bits + B``
bits per layer (or per channel). Measured on a trained BN-phase model (recipes/nqe_bsn_scale.py): the
channel scale with one mantissa bit makes the fitted conversion lossless where the layer-shared shift
lost a point.

>>> import torch
>>> bsn = BitShiftNorm(4, shift=3)
>>> bsn(torch.tensor([[8.0], [0.0], [-8.0], [4.0]]).reshape(1, 4, 1, 1)).flatten()
tensor([ 1.0000,  0.0000, -1.0000,  0.5000], grad_fn=<ViewBackward0>)
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant.ste import round_ste

__all__ = ["BitShiftNorm"]


class BitShiftNorm(nn.Module):
    def __init__(self, channels: int, shift: int = 0, shift_bits: int = 4, offset_bits: int = 12,
                 granularity: str = "layer", mantissa_bits: int = 0):
        super().__init__()
        if not 0 <= shift < (1 << shift_bits):
            raise ValueError(f"shift {shift} does not fit in {shift_bits} bits")
        if granularity not in ("layer", "channel"):
            raise ValueError(f"BSN granularity must be 'layer' or 'channel', got {granularity!r}")
        if not 0 <= mantissa_bits <= 3:
            raise ValueError(f"BSN mantissa bits must be 0..3, got {mantissa_bits}")
        self.channels, self.shift_bits, self.offset_bits = channels, shift_bits, offset_bits
        self.granularity, self.mantissa_bits = granularity, mantissa_bits
        shape = (channels,) if granularity == "channel" else ()
        self.register_buffer("shift", torch.full(shape, int(shift), dtype=torch.int64))
        self.register_buffer("mant", torch.zeros(shape, dtype=torch.int64))
        self.offset = nn.Parameter(torch.zeros(channels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # files written before the mantissa existed (session 34) have no "mant": the paper's BSN, m = 0
        if prefix + "shift" in state_dict and prefix + "mant" not in state_dict:
            state_dict[prefix + "mant"] = torch.zeros_like(self.mant)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def offset_limit(self) -> int:
        return (1 << (self.offset_bits - 1)) - 1

    @property
    def per_channel(self) -> bool:
        return self.granularity == "channel"

    def multiplier(self) -> torch.Tensor:
        """``M = 2^mantissa_bits + m``: the integer multiplier of the accumulator (1 without a mantissa)."""
        return self.mant + (1 << self.mantissa_bits)

    def total_shift(self) -> torch.Tensor:
        """``k + mantissa_bits``: the right shift applied after ``acc * M + o``."""
        return self.shift + self.mantissa_bits

    def set_scale(self, shift, mant=0) -> None:
        """Set the stored shift(s) and mantissa(s) (ints or per-channel sequences), range-checked."""
        k = torch.as_tensor(shift, dtype=torch.int64).reshape(-1).expand(self.shift.numel()).reshape(self.shift.shape)
        m = torch.as_tensor(mant, dtype=torch.int64).reshape(-1).expand(self.mant.numel()).reshape(self.mant.shape)
        if int(k.min()) < 0 or int(k.max()) >= 1 << self.shift_bits:
            raise ValueError(f"shift out of the {self.shift_bits}-bit range")
        if int(m.min()) < 0 or int(m.max()) >= 1 << self.mantissa_bits:
            raise ValueError(f"mantissa out of the {self.mantissa_bits}-bit range")
        self.shift.copy_(k)
        self.mant.copy_(m)

    def int_offsets(self) -> torch.Tensor:
        """The stored integer offsets o_c (units of ``acc * M``)."""
        lim = self.offset_limit
        o = torch.round(self.offset.detach().float() * torch.exp2(self.total_shift().float()))
        return o.clamp(-lim - 1, lim).to(torch.int64)

    def forward(self, acc: torch.Tensor) -> torch.Tensor:
        # The trainable parameter is the offset in *output* units (o_c * 2^-(k+B)), so that one
        # learning rate suits every layer whatever its shift; the stored value is the integer o_c.
        # 2^k as a tensor op, not int(self.shift): torch.compile then traces BSN without a graph break
        lim = self.offset_limit
        scale = torch.exp2(self.total_shift().to(self.offset.dtype))
        o = round_ste(self.offset * scale).clamp(-lim - 1, lim)
        if self.per_channel:
            scale = scale.reshape(1, -1, 1, 1)
        if self.mantissa_bits:
            acc = acc * self.multiplier().to(acc.dtype).reshape(scale.shape)
        return (acc + o.to(acc.dtype).reshape(1, -1, 1, 1)) * scale.reciprocal().to(acc.dtype)

    def _nearest_scale(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, m) with ``(1 + m/2^B) 2^-k`` nearest (in log2) to each ``a`` (a tensor), k clamped to range."""
        B = self.mantissa_bits
        grid = torch.log2(1.0 + torch.arange(1 << B, dtype=torch.float64) / (1 << B))  # [2^B] in [0, 1)
        la = torch.log2(a.double().clamp_min(1e-30))  # a = (1 + m/2^B) 2^-k: log2 a = -k + grid[m]
        e = torch.floor(la)
        cand = torch.cat([e[..., None] + grid, e[..., None] + 1.0], -1)  # the last: m = 0 one octave up
        j = (cand - la[..., None]).abs().argmin(-1)
        k = -e - (j == (1 << B)).to(torch.float64)
        m = torch.where(j == (1 << B), torch.zeros_like(j), j)
        kmax = (1 << self.shift_bits) - 1
        return k.clamp(0, kmax).to(torch.int64), m.to(torch.int64)

    @torch.no_grad()
    def init_from_batchnorm(self, bn: nn.BatchNorm2d, quantile: float = 0.9) -> torch.Tensor:
        """Set shift(s), mantissa(s) and offsets from a trained BN; returns the per-channel sign flips.

        The caller must multiply the conv's latent weights of channel c by the returned sign.
        Layer granularity: the scale nearest to the ``quantile`` of ``|a_c|``; channel granularity
        ([I], beyond the paper): each channel's scale nearest to its own ``|a_c|``.
        """
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        d = bn.bias - a * bn.running_mean
        sign = torch.where(a < 0, -torch.ones_like(a), torch.ones_like(a))
        aa = a.abs().clamp_min(1e-12)
        k, m = self._nearest_scale(aa if self.per_channel else torch.quantile(aa.float(), quantile))
        self.shift.copy_(k)
        self.mant.copy_(m)
        s = (self.multiplier().double() * torch.exp2(-self.total_shift().double())).to(aa.dtype)  # the kept scale
        o = 0.5 / s - (0.5 - d) / aa  # middle HWMSB threshold of BN and BSN aligned, in units of acc * M
        o = o * self.multiplier().to(aa.dtype)
        lim = self.offset_limit
        self.offset.copy_(o.clamp(-lim - 1, lim) * torch.exp2(-self.total_shift().to(aa.dtype)))
        return sign

    @torch.no_grad()
    def fit_(self, acc: torch.Tensor, target: torch.Tensor, codes_fn, shift_search: int = 2,
             grid: int = 65, chunk: int = 16, loss: str = "mse") -> dict:
        """Fit shift and offsets to reproduce ``target`` codes from accumulators ``acc`` (in place).

        ``acc`` and ``target``: [C, S] samples per channel (channels already sign-flipped);
        ``codes_fn(y)`` maps BSN outputs to activation codes (e.g. HWMSB). Layer granularity: shifts
        k0-shift_search .. k0+shift_search (k0: the current shift) and every mantissa are tried; channel
        granularity: each channel keeps the scale set from its BN (``init_from_batchnorm``) and only the
        offsets are fitted. For each candidate scale, every channel's offset is searched
        on a grid of ``grid`` values over every offset that puts part of the channel inside the code
        range, then refined down to integer accumulator units [I]. ``loss``: "mse" (squared code error, default
        [I]) or "mismatch" (fraction of differing codes). Returns the chosen shift and per-candidate errors.
        """
        if loss not in ("mse", "mismatch"):
            raise ValueError(f"loss must be 'mse' or 'mismatch', got {loss!r}")
        acc, target = acc.float(), target.float()
        lim = self.offset_limit
        kmax = (1 << self.shift_bits) - 1
        C = acc.shape[0]
        if self.per_channel:
            cands = [(self.shift.clone(), self.mant.clone())]
        else:
            k0 = int(self.shift)
            cands = [(torch.tensor(k), torch.tensor(m)) for k in range(max(0, k0 - shift_search), min(kmax, k0 + shift_search) + 1)
                     for m in range(1 << self.mantissa_bits)]
        best = None
        errors = {}
        u = torch.linspace(0.0, 1.0, grid, device=acc.device)
        fine = torch.linspace(-1.0, 1.0, 33, device=acc.device)
        B = self.mantissa_bits
        for k, m in cands:
            unit = torch.exp2(-(k + B).double()).float().expand(C).to(acc.device)  # one integer offset step, output units
            mult = (m + (1 << B)).float().expand(C).to(acc.device)
            y0 = acc * (mult * unit)[:, None]  # [C, S] without offset
            # every offset that puts some of the channel's inputs inside the code range [0, 1)
            lo = -torch.quantile(y0, 0.995, dim=1) - 0.25
            hi = 1.25 - torch.quantile(y0, 0.005, dim=1)
            tot, offs = 0.0, torch.empty(C, device=acc.device)
            for c0 in range(0, C, chunk):
                y, t = y0[c0 : c0 + chunk, None, :], target[c0 : c0 + chunk, None, :]
                l_, h_ = lo[c0 : c0 + chunk, None], hi[c0 : c0 + chunk, None]
                un = unit[c0 : c0 + chunk, None]
                cand, step = l_ + (h_ - l_) * u[None, :], (h_ - l_) / (grid - 1)  # [c, G] output units
                while True:  # a coarse grid, then finer ones around the best, down to integer offsets
                    cand = torch.round(cand / un).clamp(-lim - 1, lim) * un
                    diff = codes_fn(y + cand[:, :, None]) - t  # [c, G, S]
                    err = (diff.pow(2) if loss == "mse" else (diff != 0).float()).mean(2)  # [c, G]
                    e, j = err.min(1)
                    best_c = cand.gather(1, j[:, None])
                    if float((step / un[:, 0]).max()) <= 1.0:
                        break
                    cand, step = best_c + step * fine[None, :], step / 16
                offs[c0 : c0 + chunk] = best_c[:, 0]
                tot += float(e.sum())
            key = "channel" if self.per_channel else (f"{int(k)}" if not B else f"{int(k)}m{int(m)}")
            errors[key] = tot / C
            if best is None or tot < best[0]:
                best = (tot, k, m, offs)
        _, k, m, offs = best
        k0_report = int(self.shift) if not self.per_channel else None
        self.shift.copy_(k)
        self.mant.copy_(m)
        self.offset.copy_(offs)
        if self.per_channel:
            return {"shift": self.shift.tolist(), "mantissa": self.mant.tolist(),
                    "code_mse": {kk: round(v, 5) for kk, v in errors.items()}}
        rep = {"shift": int(k), "quantile_shift": k0_report, "code_mse": {kk: round(v, 5) for kk, v in errors.items()}}
        return rep | ({"mantissa": int(m)} if B else {})

    def extra_repr(self) -> str:
        k = int(self.shift) if not self.per_channel else f"{int(self.shift.min())}..{int(self.shift.max())}"
        extra = f", granularity={self.granularity}" if self.per_channel else ""
        extra += f", mantissa_bits={self.mantissa_bits}" if self.mantissa_bits else ""
        return f"{self.channels}, shift={k}, offset_bits={self.offset_bits}{extra}"
