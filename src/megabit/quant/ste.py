"""Straight-through estimator (STE) primitives, in one place.

Every quantizer in megabit is built from these ops so that the forward pass is the exact
integer-valued function used at inference and the backward pass is a documented surrogate.

>>> import torch
>>> x = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
>>> round_ste(x)
tensor([ 0.,  2., -2.], grad_fn=<RoundSTEBackward>)
"""

from __future__ import annotations

import torch

__all__ = ["round_ste", "floor_ste", "sign_ste", "stochastic_sign_ste", "clamp_leaky"]


class RoundSTE(torch.autograd.Function):
    """y = round(x) (half to even, torch's rule); dy/dx = 1."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g


class FloorSTE(torch.autograd.Function):
    """y = floor(x); dy/dx = 1."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.floor(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g


class SignSTE(torch.autograd.Function):
    """y = +1 if x >= 0 else -1 (no zero level); dy/dx = 1 for |x| <= 1 else 0 (hardtanh STE)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class ClampLeaky(torch.autograd.Function):
    """y = clamp(x, lo, hi); dy/dx = 1 inside [lo, hi], `slope` outside (a "leaky clip").

    Chosen definition (the FMPQ paper's exact form is not public): the forward pass is the hard
    clip used at inference; the backward pass lets a small gradient through outside the range so
    that values pushed past the clip can still come back. slope=0 gives the usual hard clip STE.
    """

    @staticmethod
    def forward(ctx, x, lo, hi, slope):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi, ctx.slope = lo, hi, slope
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        inside = (x >= ctx.lo) & (x <= ctx.hi)
        scale = torch.where(inside, torch.ones_like(x), torch.full_like(x, ctx.slope))
        return g * scale, None, None, None


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return RoundSTE.apply(x)


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    return FloorSTE.apply(x)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    return SignSTE.apply(x)


def clamp_leaky(x: torch.Tensor, lo: float, hi: float, slope: float = 0.01) -> torch.Tensor:
    """Hard clamp forward, gradient 1 inside and `slope` outside.

    >>> import torch
    >>> x = torch.tensor([-3.0, 0.5, 3.0], requires_grad=True)
    >>> clamp_leaky(x, -1.0, 1.0, 0.1).sum().backward()
    >>> x.grad
    tensor([0.1000, 1.0000, 0.1000])
    """
    return ClampLeaky.apply(x, float(lo), float(hi), float(slope))


class StochasticSignSTE(torch.autograd.Function):
    """Stochastic binarization of ``t`` in [-1, 1] (Raiko et al. 2014; Toderici et al. 2016):
    +1 with probability ``(1 + t) / 2``, else -1, so that ``E[b] = t``; gradient 1 (of the expectation)."""

    @staticmethod
    def forward(ctx, t, u):  # type: ignore[override]
        return torch.where(u < (1 + t) / 2, torch.ones_like(t), -torch.ones_like(t))

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g, None


def stochastic_sign_ste(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time binarization: ``t = tanh(x)`` then a ±1 draw with mean ``t`` (gradient through tanh).

    At inference the same code is ``sign(x)`` (deterministic), the draw's most likely value.

    >>> import torch
    >>> b = stochastic_sign_ste(torch.full((10000,), 0.5493), torch.Generator().manual_seed(0))  # tanh = 0.5
    >>> round(float(b.mean()), 1), sorted(set(b.tolist()))
    (0.5, [-1.0, 1.0])
    """
    t = torch.tanh(x)
    u = torch.rand(t.shape, generator=generator, dtype=t.dtype, device="cpu").to(t.device)
    return StochasticSignSTE.apply(t, u)
