"""Per-layer precision (number of odd bins) chosen from the entropy objective.

After arXiv 2406.06237: weights on an odd, zero-point grid are entropy-coded, so a layer's
storage cost is not ``ceil(log2 n)`` but the entropy ``H_l(n)`` of its codes. For every layer
``l`` and candidate number of bins ``n`` (default {3, 5, 7, 9, 15}) we measure

* ``H_l(n)`` — empirical entropy of the codes, bits per weight (what the ANS coder spends, up to
  its table overhead; ``bits_source="tans"`` measures the real tANS payload + table instead);
* ``e_l(n)`` — distortion: the relative MSE ``||w − q_n(w)||² / ||w||²`` of the fake-quantized
  weights, or, if a ``sensitivity(name, w_hat) -> float`` callable is given (e.g. the loss on a
  calibration batch with that layer's weights replaced), that loss increase.

and choose ``n_l`` by one of two rules:

* **Lagrangian** (``lam``): per layer ``argmin_n  D_l(n) + lam · B_l(n)`` with
  ``B_l = N_l · H_l`` (bits) and ``D_l = N_l · e_l`` for relative MSE (so ``lam`` is "relative
  MSE per bit per weight") or ``D_l = sensitivity`` (``lam`` in loss units per bit).
* **Budget** (``budget_bits``): start every layer at its cheapest candidate, then repeatedly take
  the upgrade (layer -> any larger candidate) with the best distortion drop per extra bit that
  still fits, until none fits (greedy marginal-gain allocation; not optimal in general, optimal
  on convex (bits, distortion) curves).

The paper learns per-parameter precision with an entropy-driven objective and maps it to odd
bin counts; its exact procedure is not public. This per-layer search on the trained weights is
our reading ([I]); it is meant to be run on weights trained with
:func:`megabit.quant.entropy_reg.entropy_penalty` on a wide grid.

[I] Candidate grids use the ``"absmax"`` step by default: a histogram-equalized step keeps every
bin equally full (maximum entropy by construction) and would make the entropy uninformative.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> dense = torch.randn(2000, generator=g)
>>> sparse = torch.randn(2000, generator=g) * (torch.rand(2000, generator=g) < 0.1)
>>> plan = plan_precision({"dense": dense, "sparse": sparse}, lam=0.01)
>>> plan.levels()["sparse"] >= plan.levels()["dense"]      # zeros are cheap: more bins for less
True
>>> plan.layer("sparse").entropy < plan.layer("dense").entropy
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .entropy_reg import hard_entropy
from .weight import QuantSpec, WeightQuantizer, code_range

__all__ = ["DEFAULT_CANDIDATES", "Candidate", "LayerChoice", "PrecisionPlan", "measure_layer", "plan_precision"]

#: odd (zero-point) bin counts tried by default
DEFAULT_CANDIDATES: tuple[int, ...] = (3, 5, 7, 9, 15)

Sensitivity = Callable[[str, torch.Tensor], float]


@dataclass(frozen=True)
class Candidate:
    """One (layer, bins) measurement. ``entropy`` and ``bits_per_weight`` are per weight."""

    levels: int
    entropy: float
    bits_per_weight: float
    error: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerChoice:
    """The bins chosen for one layer, with every candidate measured and the reason."""

    name: str
    n_weights: int
    levels: int
    entropy: float
    bits_per_weight: float
    error: float
    reason: str
    candidates: tuple[Candidate, ...] = ()

    @property
    def bits(self) -> float:
        return self.bits_per_weight * self.n_weights

    def to_dict(self) -> dict:
        d = asdict(self)
        d["candidates"] = [c.to_dict() for c in self.candidates]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerChoice":
        d = dict(d)
        d["candidates"] = tuple(Candidate(**c) for c in d.get("candidates", ()))
        return cls(**d)


@dataclass(frozen=True)
class PrecisionPlan:
    """Per-layer bins. ``rule`` is "lagrangian" or "budget"; totals are in bits."""

    layers: tuple[LayerChoice, ...]
    rule: str
    lam: float | None = None
    budget_bits: float | None = None
    error_kind: str = "rel_mse"
    bits_source: str = "entropy"
    step_rule: str = "absmax"
    meta: dict = field(default_factory=dict)

    def levels(self) -> dict[str, int]:
        return {l.name: l.levels for l in self.layers}

    def layer(self, name: str) -> LayerChoice:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    @property
    def total_bits(self) -> float:
        return float(sum(l.bits for l in self.layers))

    @property
    def n_weights(self) -> int:
        return sum(l.n_weights for l in self.layers)

    @property
    def bits_per_weight(self) -> float:
        return self.total_bits / max(1, self.n_weights)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [l.to_dict() for l in self.layers]
        d["total_bits"] = self.total_bits
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PrecisionPlan":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["layers"] = tuple(LayerChoice.from_dict(l) for l in d["layers"])
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        from ..utils import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrecisionPlan":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def summary(self) -> str:
        rows = [f"{l.name:<28} n={l.levels:<3} H={l.entropy:.3f} b/w  err={l.error:.4g}  ({l.reason})" for l in self.layers]
        rows.append(f"total {self.total_bits / 8 / 1024:.1f} KiB, {self.bits_per_weight:.3f} b/w over {self.n_weights} weights")
        return "\n".join(rows)


def _coded_bits(codes: torch.Tensor, levels: int) -> float:
    from ..entropy import encode_array, freqs_to_bytes

    idx = (codes.reshape(-1).round().to(torch.int64) - code_range(levels)[0]).numpy()
    if levels % 2 == 0:
        idx = idx // 2
    payload, freqs = encode_array(idx.astype(np.int64), coder="tans")
    return 8.0 * (len(payload) + len(freqs_to_bytes(freqs)))


@torch.no_grad()
def measure_layer(name: str, w: torch.Tensor, candidates: Sequence[int] = DEFAULT_CANDIDATES,
                  step_rule: str = "absmax", per_channel: bool = False, sensitivity: Sensitivity | None = None,
                  bits_source: str = "entropy") -> list[Candidate]:
    """Entropy, coded bits and distortion of one layer's weights for every candidate bin count."""
    if bits_source not in ("entropy", "tans"):
        raise ValueError(f"bits_source must be 'entropy' or 'tans', got {bits_source!r}")
    w = w.detach().float()
    energy = float((w * w).sum()) or 1.0
    out = []
    for n in candidates:
        if n < 2:
            raise ValueError(f"candidate bin counts must be >= 2, got {n}")
        q = WeightQuantizer(QuantSpec(n, step_rule, per_channel), channels=w.shape[0] if per_channel else 1).eval()
        codes = q.codes(w)
        w_hat = q(w)
        h = hard_entropy(codes, n)
        bpw = h if bits_source == "entropy" else _coded_bits(codes, n) / max(1, w.numel())
        err = float(sensitivity(name, w_hat)) if sensitivity is not None else float(((w - w_hat) ** 2).sum()) / energy
        out.append(Candidate(n, h, bpw, err))
    return out


def _distortion(c: Candidate, n_weights: int, loss_based: bool) -> float:
    return c.error if loss_based else c.error * n_weights


def _reason(rule: str, chosen: Candidate, cands: Sequence[Candidate]) -> str:
    alts = ", ".join(f"{c.levels}:{c.bits_per_weight:.2f}b/{c.error:.3g}" for c in cands)
    return f"{rule}: {chosen.levels} bins, {chosen.bits_per_weight:.3f} b/w, err {chosen.error:.3g} [bins:b/w/err {alts}]"


def plan_precision(layers: Mapping[str, torch.Tensor] | Sequence[tuple[str, torch.Tensor]],
                   candidates: Sequence[int] = DEFAULT_CANDIDATES, lam: float | None = None,
                   budget_bits: float | None = None, sensitivity: Sensitivity | None = None,
                   step_rule: str = "absmax", per_channel: bool = False, bits_source: str = "entropy") -> PrecisionPlan:
    """Choose per-layer bins by the Lagrangian rule (``lam``) or a total-bits budget (``budget_bits``).

    ``layers``: name -> latent weights (e.g. ``{n: m.weight for n, m in quantized_layers(model)}``).
    Exactly one of ``lam`` / ``budget_bits`` must be given. Raises ``ValueError`` when the budget is
    below the cheapest plan.
    """
    if (lam is None) == (budget_bits is None):
        raise ValueError("give exactly one of lam= (Lagrangian) or budget_bits= (budget)")
    items = list(layers.items()) if isinstance(layers, Mapping) else list(layers)
    cands = sorted(set(int(c) for c in candidates))
    if not items or not cands:
        raise ValueError("need at least one layer and one candidate")
    loss_based = sensitivity is not None
    table = {name: measure_layer(name, w, cands, step_rule, per_channel, sensitivity, bits_source) for name, w in items}
    sizes = {name: int(w.numel()) for name, w in items}

    choice: dict[str, Candidate] = {}
    if lam is not None:
        rule = "lagrangian"
        for name, _ in items:
            cs = table[name]
            choice[name] = min(cs, key=lambda c: _distortion(c, sizes[name], loss_based) + lam * c.bits_per_weight * sizes[name])
    else:
        rule = "budget"
        for name, _ in items:  # cheapest candidate first (ties: the less distorted)
            choice[name] = min(table[name], key=lambda c: (c.bits_per_weight, c.error))
        used = sum(choice[n].bits_per_weight * sizes[n] for n in choice)
        if used > budget_bits:
            raise ValueError(f"budget {budget_bits:.0f} bits is below the cheapest plan ({used:.0f} bits)")
        while True:
            best, best_gain = None, 0.0
            for name, _ in items:
                cur = choice[name]
                d0 = _distortion(cur, sizes[name], loss_based)
                for c in table[name]:
                    if c.levels <= cur.levels:
                        continue
                    dbits = (c.bits_per_weight - cur.bits_per_weight) * sizes[name]
                    dgain = d0 - _distortion(c, sizes[name], loss_based)
                    if dgain <= 0 or used + dbits > budget_bits:
                        continue
                    gain = float("inf") if dbits <= 0 else dgain / dbits
                    if best is None or gain > best_gain:
                        best, best_gain = (name, c, dbits), gain
            if best is None:
                break
            name, c, dbits = best
            choice[name] = c
            used += dbits

    chosen = tuple(
        LayerChoice(name, sizes[name], choice[name].levels, choice[name].entropy, choice[name].bits_per_weight,
                    choice[name].error, _reason(rule, choice[name], table[name]), tuple(table[name]))
        for name, _ in items)
    return PrecisionPlan(chosen, rule, lam, budget_bits, "sensitivity" if loss_based else "rel_mse", bits_source, step_rule)
