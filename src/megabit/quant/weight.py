"""Weight quantizers: linear symmetric n-level grids with integer codes.

A quantizer maps a latent float weight ``w`` to an integer code ``c`` and a real value
``w_hat = c * unit``. Two families cover everything megabit uses:

* **odd** ``n = 2m+1`` levels (zero-point / "odd number of bins centred on zero"):
  ``c = clamp(round(w / s), -m, m)``, ``unit = s``. n=3 is ternary, n=5 quinary.
* **even** ``n = 2m`` levels (no zero): ``c = clamp(2*floor(w / s) + 1, -(n-1), n-1)`` (odd
  integers), ``unit = s / 2``. n=2 is binary (``c = sign(w)``), n=4 gives {-3,-1,1,3}·s/2.

Storage cost with raw bit-packing is ``ceil(log2(n))`` bits per weight (binary 1b, ternary 2b,
quinary 3b); entropy coding (``megabit.entropy``) goes below that.

The step ``s`` is chosen by one of four rules (``step_rule``):

* ``"heq"`` — histogram-equalized step ([I] our reading of arXiv 2501.05097 / 2501.04517 HEQ,
  whose exact update rule is not public): decision thresholds should sit on the quantiles of
  ``|w|`` that give every level the same share of weights. For odd n the thresholds are
  ``(j+1/2)·s`` and their targets ``Q_j = Q_|w|((2j+1)/n)``, j = 0..m-1; for even n the thresholds
  are ``j·s`` with targets ``Q_|w|(j/m)``, j = 1..m-1. One scalar cannot meet all targets, so
  ``s = Σ a_j Q_j / Σ a_j²`` (least squares, ``a_j`` the threshold multipliers). Ternary: ``s = 2·Q(1/3)``.
  Binary has no threshold: ``s = 2·mean|w|`` (L2-optimal ±s/2).
* ``"absmax"`` — ``s = max|w| / m`` (classic linear symmetric quantizer; even n: ``2·max|w|/(n-1)``).
* ``"fixed"`` — the step is a buffer set by the user (e.g. from a checkpoint).
* ``"learned"`` — the step is a trained parameter (LSQ, Esser et al. 2020): initialized once by the
  ``"absmax"`` rule [I] (the grid the precision plan measures), then moved by the loss gradient
  ``d(c·s)/ds = c − w/s`` inside the range and ``±m`` outside, scaled by ``g = 1/sqrt(N_s·m)``
  (``N_s`` weights per step, ``m`` the largest code) so that it learns at the weights' pace.

The step follows the weights during training as an EMA (``momentum``, default 0.1; 1.0 = recompute
every step; not for ``"learned"``) and is frozen in eval mode, so inference is deterministic.

>>> import torch
>>> q = WeightQuantizer(QuantSpec(levels=3))
>>> w = torch.randn(64, 32, 3, 3)
>>> c = q.codes(w)
>>> sorted(int(v) for v in c.unique())
[-1, 0, 1]
>>> occ = q.occupancy(c)
>>> bool(abs(occ[1] - 1/3) < 0.05)   # histogram-equalized: the zero bin holds ~1/3 of the weights
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .ste import clamp_leaky, floor_ste, round_ste

__all__ = ["QuantSpec", "WeightQuantizer", "STEP_RULES", "bits_per_code", "code_range"]

STEP_RULES = ("heq", "absmax", "fixed", "learned")


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor of weights is quantized.

    levels: number of levels n (2 binary, 3 ternary, 5 quinary, 2**k - 1 for a k-bit zero-point grid;
        0 means "not quantized", float weights).
    step_rule: "heq" | "absmax" | "fixed" | "learned".
    per_channel: one step per output channel (dim 0) instead of one per tensor.
    momentum: EMA factor of the step update during training.
    leak: gradient slope outside the clip range (0 = hard clip STE).
    """

    levels: int = 3
    step_rule: str = "heq"
    per_channel: bool = False
    momentum: float = 0.1
    leak: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        return cls(**d)

    @property
    def bits(self) -> int:
        return bits_per_code(self.levels)


def bits_per_code(levels: int) -> int:
    """Raw bits to store one code of an n-level quantizer (32 for float)."""
    if levels == 0:
        return 32
    if levels < 2:
        raise ValueError(f"a quantizer needs at least 2 levels, got {levels}")
    return max(1, math.ceil(math.log2(levels)))


def code_range(levels: int) -> list[int]:
    """The integer codes an n-level quantizer emits, ascending."""
    if levels % 2:
        m = levels // 2
        return list(range(-m, m + 1))
    return list(range(-(levels - 1), levels, 2))


def _quantile_abs(w: torch.Tensor, qs: list[float], per_channel: bool) -> torch.Tensor:
    """Quantiles of |w| (over the whole tensor, or per output channel): shape [len(qs)] or [C, len(qs)]."""
    a = w.detach().abs().float()
    a = a.reshape(a.shape[0], -1) if per_channel else a.reshape(1, -1)
    srt, _ = torch.sort(a, dim=1)
    n = srt.shape[1]
    idx = torch.tensor([min(n - 1, max(0, int(round(q * (n - 1))))) for q in qs], device=a.device)
    out = srt[:, idx]
    return out if per_channel else out[0]


class WeightQuantizer(nn.Module):
    """n-level linear symmetric weight quantizer with an adaptive (histogram-equalized) step."""

    def __init__(self, spec: QuantSpec, channels: int = 1):
        super().__init__()
        if spec.levels != 0 and spec.levels < 2:
            raise ValueError(f"levels must be 0 (float) or >= 2, got {spec.levels}")
        if spec.step_rule not in STEP_RULES:
            raise ValueError(f"unknown step_rule {spec.step_rule!r}; known: {', '.join(STEP_RULES)}")
        self.spec = spec
        step = torch.ones(channels if spec.per_channel else 1)
        if spec.step_rule == "learned":  # same state_dict key as the buffer of the other rules
            self.step = nn.Parameter(step)
        else:
            self.register_buffer("step", step)
        self.register_buffer("initialized", torch.tensor(False))

    # -- step -----------------------------------------------------------------------------
    def target_step(self, w: torch.Tensor) -> torch.Tensor:
        """The step the rule asks for on these weights (no EMA)."""
        n, pc = self.spec.levels, self.spec.per_channel
        if self.spec.step_rule in ("absmax", "learned"):
            a = w.detach().abs().reshape(w.shape[0], -1).amax(1) if pc else w.detach().abs().max().reshape(1)
            m = n // 2 if n % 2 else (n - 1) / 2
            return (a / m).clamp_min(1e-8)
        if n % 2:  # odd: thresholds (j+1/2)s at Q((2j+1)/n)
            m = n // 2
            a = torch.tensor([j + 0.5 for j in range(m)], device=w.device)
            qv = _quantile_abs(w, [(2 * j + 1) / n for j in range(m)], pc)
        elif n == 2:
            mean = w.detach().abs().reshape(w.shape[0], -1).mean(1) if pc else w.detach().abs().mean().reshape(1)
            return (2 * mean).clamp_min(1e-8)
        else:  # even: thresholds j*s at Q(j/m)
            m = n // 2
            a = torch.tensor([float(j) for j in range(1, m)], device=w.device)
            qv = _quantile_abs(w, [j / m for j in range(1, m)], pc)
        s = (qv * a).sum(-1) / (a * a).sum()
        return s.reshape(-1).clamp_min(1e-8)

    def _update_step(self, w: torch.Tensor) -> None:
        if self.spec.step_rule == "fixed":
            return
        if self.spec.step_rule == "learned" and bool(self.initialized):
            return  # the optimizer moves it
        if self.training or not bool(self.initialized):
            with torch.no_grad():
                t = self.target_step(w).to(self.step.dtype)
                if bool(self.initialized):
                    self.step.mul_(1 - self.spec.momentum).add_(self.spec.momentum * t)
                else:
                    self.step.copy_(t.expand_as(self.step))
                    self.initialized.fill_(True)

    def _step(self, w: torch.Tensor) -> torch.Tensor:
        """The step as the forward pass uses it: for ``"learned"``, positive and gradient-scaled."""
        if self.spec.step_rule != "learned":
            return self.step
        s = self.step.abs().clamp_min(1e-8)
        m = self.spec.levels // 2 if self.spec.levels % 2 else self.spec.levels - 1
        g = 1.0 / math.sqrt(max(1, w.numel() // s.numel()) * max(1, m))
        return (s - s * g).detach() + s * g  # value s, gradient scaled by g

    def _step_view(self, w: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        s = self._step(w) if s is None else s
        if self.spec.per_channel:
            return s.reshape(-1, *([1] * (w.dim() - 1)))
        return s

    # -- forward --------------------------------------------------------------------------
    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes (float dtype, STE gradient); updates the step in training mode."""
        n = self.spec.levels
        if n == 0:
            return w
        self._update_step(w)
        return self._codes(w, self._step_view(w).to(w.dtype))

    def _codes(self, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        n = self.spec.levels
        if n % 2:
            m = n // 2
            return clamp_leaky(round_ste(w / s), -m, m, self.spec.leak)
        c = 2 * floor_ste(w / s) + 1
        return clamp_leaky(c, -(n - 1), n - 1, self.spec.leak)

    def unit(self) -> torch.Tensor:
        """Real value of one code step: s (odd n) or s/2 (even n)."""
        s = self.step.detach().abs().clamp_min(1e-8) if self.spec.step_rule == "learned" else self.step
        return s if self.spec.levels % 2 else s / 2

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Fake-quantized weights ``codes(w) * unit`` (float weights when levels == 0)."""
        if self.spec.levels == 0:
            return w
        self._update_step(w)
        s = self._step_view(w)  # one view for codes and unit: the learned step's gradient is c - w/s
        c = self._codes(w, s.to(w.dtype))
        u = s if self.spec.levels % 2 else s / 2
        return c * u.to(c.dtype)

    @torch.no_grad()
    def occupancy(self, codes: torch.Tensor) -> list[float]:
        """Fraction of weights on each level (ascending code order): equal shares = no collapse."""
        cr = code_range(self.spec.levels)
        tot = codes.numel()
        return [float((codes == c).sum()) / tot for c in cr]

    def extra_repr(self) -> str:
        return f"levels={self.spec.levels}, rule={self.spec.step_rule}, per_channel={self.spec.per_channel}"
