"""Differentiable entropy of quantized weights: the bit cost an ANS coder will pay, as a loss.

After arXiv 2406.06237 (Metz, Bichler, Dupret, ISCAS 2024): weights on a zero-point grid are
entropy-coded (ANS), so their storage cost is ``N · H(p)`` bits, ``p`` the histogram of the
codes. Training with that cost in the loss pulls weights into the most probable bin (zero)
and pushes the model "beyond the 1-bit frontier". The paper's exact relaxation is not public;
ours ([I]) is the soft-histogram estimator:

    x_i      = w_i / s                        (s = quantizer step; a learned step gets this gradient only with step_grad)
    a_ik     = softmax_k( -(x_i - c_k)² / T )  (c_k = level centres in step units, T = temperature)
    p_k      = (1/N) Σ_i a_ik                  (soft histogram)
    H        = -Σ_k p_k log2 p_k               (bits per weight)
    penalty  = Σ_layers N_layer · H_layer      (total bits of the coded weights)

Level centres: odd n = 2m+1 (zero-point) -> c = -m..m; even n -> c = ±1/2, ±3/2, ... (the
quantizer's codes times unit/step). As T -> 0 the soft assignment becomes the hard nearest-level
assignment, which is exactly what :class:`~megabit.quant.weight.WeightQuantizer` computes
(clamping included: outliers go to the outermost level), so ``H`` tends to the empirical
entropy of the codes (tested). The gradient only reaches the latent weights, not the step.

Units. ``entropy_penalty`` returns **bits**. To add it to a cross-entropy measured in nats per
sample, scale it: ``loss = CE + beta * penalty / N_weights`` makes ``beta`` the price, in nats of
CE, of one bit per weight ([I] default in recipes/resnet_table1.py: beta = 0.05). The
minimum-description-length point (total bits of data + weights) is ``beta = ln 2 · N_weights /
N_train`` — far heavier, usually too heavy for accuracy.

Temperature ([I], measured in tests/quant/test_entropy_reg.py): a small T makes ``H`` a faithful
estimate but its gradient vanishes inside the bins (a weight sitting on a level feels nothing),
so minimizing at T = 0.1 stalls with weights parked on outer levels; T ≈ 0.3 moves them to the
majority level. Use a small T to *measure*, a larger one to *train* (recipe default 0.3).

Step rule matters: a histogram-equalized step (``step_rule="heq"``) follows the quantiles of
``|w|`` and keeps every level equally full, i.e. at maximum entropy whatever the weights do, so
the penalty has nothing to act on; use ``"absmax"`` or ``"fixed"`` steps with it ([I]).

>>> import torch
>>> from megabit.quant.weight import QuantSpec, WeightQuantizer
>>> q = WeightQuantizer(QuantSpec(levels=5, step_rule="absmax"))
>>> w = torch.randn(4096, requires_grad=True)
>>> _ = q(w)                                  # initializes the step
>>> h = soft_entropy(w, q.step, 5, temperature=0.01)
>>> hard = hard_entropy(q.codes(w.detach()), 5)
>>> bool(abs(float(h) - hard) < 0.05)
True
>>> entropy_penalty([(q, w)], temperature=0.05).backward()   # total bits; gradient reaches w
>>> bool(w.grad.abs().sum() > 0)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .weight import WeightQuantizer, code_range

__all__ = ["level_centres", "soft_assign", "soft_histogram", "soft_entropy", "hard_entropy", "hard_bits_per_weight",
           "RateController", "entropy_penalty", "collect_quantizers"]


def level_centres(levels: int) -> torch.Tensor:
    """Centres of the n levels in units of the step ``s`` (ascending)."""
    c = torch.tensor(code_range(levels), dtype=torch.float32)
    return c if levels % 2 else c / 2


def _step_view(w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    step = torch.as_tensor(step, dtype=w.dtype, device=w.device)  # a learned step gets the rate gradient too
    if step.numel() > 1:  # per-channel step along dim 0
        return step.reshape(-1, *([1] * (w.dim() - 1)))
    return step.reshape(())


def soft_assign(w: torch.Tensor, step: torch.Tensor | float, levels: int, temperature: float = 0.05) -> torch.Tensor:
    """Soft assignment ``a [*w.shape, levels]`` of each weight to the grid levels (rows sum to 1)."""
    if levels < 2:
        raise ValueError(f"soft_assign needs a quantized grid (levels >= 2), got {levels}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use hard_entropy for T = 0)")
    x = (w.float() / _step_view(w.float(), torch.as_tensor(step))).unsqueeze(-1)
    c = level_centres(levels).to(x.device)
    return torch.softmax(-(x - c) ** 2 / temperature, dim=-1)


def soft_histogram(w: torch.Tensor, step: torch.Tensor | float, levels: int, temperature: float = 0.05) -> torch.Tensor:
    """Soft histogram ``p [levels]`` (sums to 1)."""
    a = soft_assign(w, step, levels, temperature)
    return a.reshape(-1, levels).mean(0)


def soft_entropy(w: torch.Tensor, step: torch.Tensor | float, levels: int, temperature: float = 0.05) -> torch.Tensor:
    """Differentiable entropy of the quantized weights, bits per weight (0-dim tensor)."""
    p = soft_histogram(w, step, levels, temperature)
    return -(p * torch.log2(p.clamp_min(1e-12))).sum()


def hard_entropy(codes: torch.Tensor | np.ndarray, levels: int | None = None) -> float:
    """Empirical entropy of integer codes, bits per weight (what an ideal entropy coder pays)."""
    c = torch.as_tensor(codes).detach().reshape(-1).round().to(torch.int64)
    if c.numel() == 0:
        return 0.0
    _, counts = torch.unique(c, return_counts=True)
    p = counts.double() / c.numel()
    return float(-(p * torch.log2(p)).sum())


def hard_bits_per_weight(model_or_quantizers: nn.Module | Iterable) -> float:
    """Σ N_layer · H(codes_layer) / Σ N_layer: what an ideal entropy coder pays per weight, now."""
    pairs = collect_quantizers(model_or_quantizers)
    bits, n = 0.0, 0
    with torch.no_grad():
        for q, w in pairs:
            was = q.training
            q.train(not bool(q.initialized))  # read the current step; never move it (no in-place update)
            try:
                c = q.codes(w)
            finally:
                q.train(was)
            bits += hard_entropy(c, q.spec.levels) * w.numel()
            n += w.numel()
    return bits / n if n else 0.0


@dataclass
class RateController:
    """Steer the entropy price ``beta`` so the weights' entropy meets a target (bits per weight).

    Multiplicative dual ascent ([I], megabit's addition: the paper trains with a fixed weight):
    after every measurement ``H`` (e.g. :func:`hard_bits_per_weight` every few steps),
    ``beta <- clip(beta · exp(gain · (H − target) / target), beta_min, beta_max)``: a model above its
    size target pays more per bit, one below it pays less. The aim is to end training near the
    target instead of wherever a fixed ``beta`` drives it; measured on ResNet-20 (4 epochs) it did
    **not** hold the target: the entropy overshot below it and stayed (weights pulled into the zero
    bin do not come back when ``beta`` falls), see docs/entropy-coded-weights.md. At ``gain=2`` it
    held ResNet-20 at 0.81–0.84 for a 0.82 target, but on the 10x larger ResNet-18 body (6 epochs)
    the same setting ended at 0.71 and 0.57 (seeds 0, 1): the target is an upper bound, not a
    set point. The target is in
    entropy bits per weight; tANS adds about 1 % and its tables a few thousandths of a bit per weight.

    >>> c = RateController(target=1.0, beta=0.5)
    >>> c.update(1.2) > 0.5, c.update(0.5) < c.beta_max
    (True, True)
    """

    target: float
    beta: float
    gain: float = 0.5
    beta_min: float = 1e-3
    beta_max: float = 20.0

    def __post_init__(self):
        if not self.target > 0:
            raise ValueError(f"rate target must be > 0 bits per weight, got {self.target}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0 for a rate target, got {self.beta}")

    def update(self, measured: float) -> float:
        err = (float(measured) - self.target) / self.target
        self.beta = float(min(self.beta_max, max(self.beta_min, self.beta * math.exp(self.gain * err))))
        return self.beta


def collect_quantizers(obj) -> list[tuple[WeightQuantizer, torch.Tensor]]:
    """(quantizer, latent weight) pairs of a model or an explicit list of pairs.

    A model is searched for modules with a ``quant`` :class:`WeightQuantizer` and a ``weight``
    parameter (megabit's QConv blocks, ResNet layers); a ``quantizers()`` method returning
    ``(name, quantizer, weight)`` triples (``NQE``) is used when present. Float layers
    (levels == 0) are skipped.
    """
    if isinstance(obj, nn.Module):
        if hasattr(obj, "quantizers") and callable(obj.quantizers):
            pairs = [(q, w) for _, q, w in obj.quantizers()]
        else:
            pairs = [(m.quant, m.weight) for m in obj.modules()
                     if isinstance(getattr(m, "quant", None), WeightQuantizer) and isinstance(getattr(m, "weight", None), torch.Tensor)]
    else:
        pairs = [(t[-2], t[-1]) for t in obj]
    return [(q, w) for q, w in pairs if q.spec.levels >= 2]


def entropy_penalty(model_or_quantizers: nn.Module | Iterable, temperature: float = 0.05,
                    max_samples: int | None = None, generator: torch.Generator | None = None,
                    step_grad: bool = False) -> torch.Tensor:
    """Σ_layers N_layer · H_layer: differentiable total bits of the entropy-coded weights.

    ``model_or_quantizers``: a model (see :func:`collect_quantizers`) or ``(quantizer, weight)``
    pairs. A quantizer whose step has never been set is initialized from its weight first.
    ``max_samples``: estimate each layer's histogram from a random subset of at most this many
    weights (unbiased for ``p``; cheaper for wide grids); ``N_layer`` stays the full count.
    ``step_grad``: let the penalty's gradient reach learned steps (``step_rule="learned"``) too; by
    default [I] the penalty moves only the weights and a learned step follows the task loss alone
    (with the gradient, the step is the cheapest way to lower the entropy and grows until almost
    every weight is in the zero bin: measured, 0.35 b/w at -7 points on ResNet-20).
    """
    pairs = collect_quantizers(model_or_quantizers)
    total = None
    for q, w in pairs:
        if not bool(q.initialized) and q.spec.step_rule != "fixed":
            q._update_step(w)
        x = w
        if max_samples is not None and w.numel() > max_samples:
            if q.spec.per_channel:
                raise ValueError("max_samples needs per-tensor steps")
            idx = torch.randperm(w.numel(), generator=generator, device=w.device)[:max_samples]
            x = w.reshape(-1)[idx]
        st = q._step(w) if step_grad else q.step.detach()
        h = soft_entropy(x, st, q.spec.levels, temperature) * w.numel()
        total = h if total is None else total + h
    if total is None:
        return torch.zeros((), requires_grad=False)
    return total

