"""HWMSB 2-bit activation: levels {0, 1/3, 2/3, 1}.

Half-Wave Most-Significant-Bits ([I] our reading of arXiv 2501.05097; the exact forward/backward is
not public): rectify (half wave), clip to [0, 1], keep the 2 most significant bits of the
fixed-point value (floor, not round). In *code units* (what the integer hardware sees):

    m = clamp(floor(4 * y), 0, 3)        value a = m / 3 ∈ {0, 1/3, 2/3, 1}

so the decision thresholds on y are 1/4, 1/2, 3/4. Backward (STE): dm/dy = 4 on [0, 1] and
``leak * 4`` outside. ``mode="round"`` offers the other reading, uniform rounding
``m = clamp(round(3y), 0, 3)`` (thresholds 1/6, 1/2, 5/6).

megabit networks pass the code ``m`` (not m/3) to the next layer: the next layer's
normalization absorbs the constant 1/3, and the integer path stays integer.

>>> import torch
>>> hwmsb_codes(torch.tensor([-0.2, 0.2, 0.3, 0.6, 0.8, 1.7]))
tensor([0., 0., 1., 2., 3., 3.])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["hwmsb_codes", "HWMSB"]


class _HWMSB(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, bits, mode, leak):  # type: ignore[override]
        top = (1 << bits) - 1
        ctx.save_for_backward(y)
        ctx.leak, ctx.gain = leak, float(top + 1 if mode == "floor" else top)
        if mode == "floor":
            return torch.floor(y * (top + 1)).clamp(0, top)
        return torch.round(y * top).clamp(0, top)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        inside = (y >= 0) & (y <= 1)
        scale = torch.where(inside, torch.full_like(y, ctx.gain), torch.full_like(y, ctx.gain * ctx.leak))
        return g * scale, None, None, None


def hwmsb_codes(y: torch.Tensor, bits: int = 2, mode: str = "floor", leak: float = 0.0) -> torch.Tensor:
    """Integer activation codes 0..2**bits-1 of y (STE backward)."""
    if mode not in ("floor", "round"):
        raise ValueError(f"HWMSB mode must be 'floor' or 'round', got {mode!r}")
    return _HWMSB.apply(y, bits, mode, leak)


class HWMSB(nn.Module):
    """Module form of :func:`hwmsb_codes` (returns codes 0..3 for bits=2)."""

    def __init__(self, bits: int = 2, mode: str = "floor", leak: float = 0.0):
        super().__init__()
        self.bits, self.mode, self.leak = bits, mode, leak

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return hwmsb_codes(y, self.bits, self.mode, self.leak)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}"
