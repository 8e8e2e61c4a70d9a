"""Find the bit distribution for a target model size: FMPQ adaptive search, grid and exhaustive baselines.

The size ``S(beta)`` of the Algorithm-1 allocation is a non-increasing step function of the tolerance
``beta``; each evaluation only reads the cached zeta table (no forward pass).

Adaptive search ([I] our reading of arXiv 2506.01221; the public material gives "variable steps,
larger when far from the target, smaller near it", factors 5x and 2x, and a +-1% tolerance)::

    beta = beta0
    loop (one iteration = one S(beta) evaluation):
        s = S(beta); if |s - T| <= tol*T: done
        record beta as too-small (s > T) or too-large (s < T)
        if both sides are known: beta = sqrt(beta_lo * beta_hi)       (bisection in log beta)
        elif |s - T| > far*T:    beta = beta * 5  (s > T)  or  beta / 5  (s < T)
        else:                    beta = beta * 2  (s > T)  or  beta / 2  (s < T)

Because ``S`` is a step function, a target can fall into a jump; the search then stops when the
bracket is narrower than ``min_ratio`` and returns the closest size not above ``T (1 + tol)``
(``converged=False``).

>>> import numpy as np
>>> from megabit.search.quantize import LayerInfo
>>> from megabit.search.sensitivity import SensitivityTable
>>> L = [LayerInfo(f"l{i}", 1000, 8, "Conv2d") for i in range(4)]
>>> z = np.array([[2.0 ** -(b + i) for b in range(2, 9)] for i in range(4)])
>>> t = SensitivityTable(L, list(range(2, 9)), z, 1.0, 0.01)
>>> r = adaptive_search(t, target_bits=19_000)   # beta: 0.01 (too big) -> x5 (too small) -> bisect
>>> r.converged, r.size_bits, [r.bits[f"l{i}"] for i in range(4)], r.iterations
(True, 19024, [6, 5, 4, 3], 3)
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .allocate import allocate, uniform_bits
from .plan import QuantPlan
from .quantize import n_scales, plan_size_bits
from .sensitivity import SensitivityTable

__all__ = ["SearchResult", "size_bounds", "adaptive_search", "grid_search", "exhaustive_search", "fill_budget"]


@dataclass
class SearchResult:
    bits: dict[str, int]
    size_bits: int
    target_bits: int
    beta: float | None
    iterations: int
    converged: bool
    method: str
    seconds: float
    trace: list[dict[str, Any]] = field(default_factory=list)

    def to_plan(self, table: SensitivityTable, scale_bits: int = 32, **meta: Any) -> QuantPlan:
        m = {"method": self.method, "target_bits": self.target_bits, "beta": self.beta, "iterations": self.iterations,
             "converged": self.converged, "search_seconds": round(self.seconds, 6),
             "predicted_zeta_sum": predicted_cost(table, self.bits), "lmbda": table.lmbda, **meta}
        return QuantPlan(list(table.layers), dict(self.bits), scale_bits, m, table.granularity)


def predicted_cost(table: SensitivityTable, bits: dict[str, int]) -> float:
    """Sum of per-layer zeta at the chosen bit-widths (additive proxy of the RD increase)."""
    return float(sum(table.zeta[n, table.bits.index(bits[li.name])] for n, li in enumerate(table.layers)))


def size_bounds(table: SensitivityTable, scale_bits: int = 32) -> tuple[int, int]:
    """(size with every layer at the lowest candidate, size with every layer at the highest)."""
    return (plan_size_bits(table.layers, uniform_bits(table, table.bits[0]), scale_bits, table.granularity),
            plan_size_bits(table.layers, uniform_bits(table, table.bits[-1]), scale_bits, table.granularity))


def _check_target(table: SensitivityTable, target_bits: float, tol: float, scale_bits: int) -> None:
    if not tol >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tol}")
    lo, hi = size_bounds(table, scale_bits)
    if target_bits * (1 + tol) < lo:
        raise ValueError(f"target {target_bits:.0f} bits is below the all-{table.bits[0]}-bit size {lo} bits: "
                         "cannot be met")
    if target_bits * (1 - tol) > hi:
        raise ValueError(f"target {target_bits:.0f} bits is above the all-{table.bits[-1]}-bit size {hi} bits: "
                         "cannot be met")


def adaptive_search(table: SensitivityTable, target_bits: float, tol: float = 0.01, beta0: float = 0.01,
                    far: float = 0.1, coarse: float = 5.0, fine: float = 2.0, max_iter: int = 200,
                    min_ratio: float = 1 + 1e-9, mode: str = "scan", scale_bits: int = 32,
                    bracket: str = "breakpoints") -> SearchResult:
    """FMPQ adaptive search on ``beta`` for a model size within ``target_bits * (1 +- tol)``.

    ``bracket`` says how a bracketed ``beta`` is refined: ``"log"`` bisects in log beta (our reading of
    the paper; a target inside a jump costs ~30 evaluations until the bracket is ``min_ratio`` wide);
    ``"breakpoints"`` (default, megabit's) bisects over the table's own zeta values, the only betas at
    which the size can change, so it ends after ``ceil(log2(#zeta values in the bracket))`` evaluations
    and reports a target inside a jump exactly. Both return the same plan.
    """
    _check_target(table, target_bits, tol, scale_bits)
    if not beta0 > 0:
        raise ValueError("beta0 must be > 0")
    if bracket not in ("log", "breakpoints"):
        raise ValueError(f"bracket must be 'log' or 'breakpoints', got {bracket!r}")
    zs = np.unique(np.asarray(table.zeta, dtype=np.float64).ravel())  # size changes only when beta crosses one
    t0 = time.perf_counter()
    T = float(target_bits)
    beta, lo, hi = float(beta0), None, None  # lo: a beta whose size is too large; hi: too small
    trace: list[dict[str, Any]] = []
    best: tuple[float, float, dict[str, int], int] | None = None
    converged = False
    for it in range(1, max_iter + 1):
        bits = allocate(table, beta, mode)
        s = plan_size_bits(table.layers, bits, scale_bits, table.granularity)
        trace.append({"iter": it, "beta": beta, "size_bits": s})
        key = (0 if s <= T * (1 + tol) else 1, abs(s - T))
        if best is None or key < best[:2]:
            best = (key[0], key[1], bits, s, beta)  # type: ignore[assignment]
        if abs(s - T) <= tol * T:
            converged = True
            break
        if s > T:
            lo = beta
        else:
            hi = beta
        if lo is not None and hi is not None:
            if bracket == "breakpoints":
                # the allocation depends only on k(beta) = #{zeta < beta}; bisect on k
                k_lo, k_hi = int(np.searchsorted(zs, lo, "left")), int(np.searchsorted(zs, hi, "left"))
                if k_hi - k_lo <= 1:
                    break  # adjacent steps: the target lies inside a jump of S
                beta = float(zs[(k_lo + k_hi) // 2])  # k(zs[m]) = m
                continue
            if hi / lo <= min_ratio:
                break
            beta = math.sqrt(lo * hi)
        else:
            f = coarse if abs(s - T) > far * T else fine
            beta = beta * f if s > T else beta / f
            if not 1e-300 < beta < 1e300:
                break
    assert best is not None
    _, _, bits, s, b = best  # type: ignore[misc]
    return SearchResult(bits, s, int(round(T)), b, len(trace), converged, "adaptive" if bracket == "breakpoints"
                        else "adaptive-log", time.perf_counter() - t0, trace)


def fill_budget(table: SensitivityTable, bits: dict[str, int], max_bits: float,
                scale_bits: int = 32) -> tuple[dict[str, int], int]:
    """Greedy budget fill after the search (megabit's addition, not in the paper) [I].

    Algorithm 1 can only reach the sizes on its beta path; a target inside a jump leaves budget
    unused. Repeatedly raise one layer to its next candidate bit-width, the one with the largest zeta
    decrease per added bit, while the size stays ``<= max_bits`` and the decrease is positive.
    Returns ``(bits, steps)``.
    """
    bits = dict(bits)
    size = plan_size_bits(table.layers, bits, scale_bits, table.granularity)
    pos = {b: k for k, b in enumerate(table.bits)}
    steps = 0
    while True:
        best = None
        for n, li in enumerate(table.layers):
            k = pos[bits[li.name]]
            if k + 1 >= len(table.bits):
                continue
            add = li.n_weights * (table.bits[k + 1] - table.bits[k])
            gain = (float(table.zeta[n, k]) - float(table.zeta[n, k + 1])) / add
            if size + add <= max_bits and gain > 0 and (best is None or gain > best[0]):
                best = (gain, li.name, table.bits[k + 1], add)
        if best is None:
            return bits, steps
        bits[best[1]] = best[2]
        size += best[3]
        steps += 1


def grid_search(table: SensitivityTable, target_bits: float, tol: float = 0.01, n: int = 500,
                beta_range: tuple[float, float] = (1e-6, 1e3), mode: str = "scan",
                scale_bits: int = 32) -> SearchResult:
    """Baseline: evaluate Algorithm 1 at ``n`` log-spaced betas and keep the best feasible size.

    Among sizes within tolerance the one with the lowest predicted RD increase (sum of zeta) wins;
    otherwise the closest size not above ``T (1 + tol)``.
    """
    _check_target(table, target_bits, tol, scale_bits)
    t0 = time.perf_counter()
    T = float(target_bits)
    best, best_key, trace = None, None, []
    for i, beta in enumerate(np.geomspace(beta_range[0], beta_range[1], n)):
        bits = allocate(table, float(beta), mode)
        s = plan_size_bits(table.layers, bits, scale_bits, table.granularity)
        trace.append({"iter": i + 1, "beta": float(beta), "size_bits": s})
        ok = abs(s - T) <= tol * T
        key = (0, predicted_cost(table, bits)) if ok else (1 if s <= T * (1 + tol) else 2, abs(s - T))
        if best_key is None or key < best_key:
            best, best_key = (bits, s, float(beta)), key
    assert best is not None and best_key is not None
    return SearchResult(best[0], best[1], int(round(T)), best[2], n, best_key[0] == 0, "grid",
                        time.perf_counter() - t0, trace)


def exhaustive_search(table: SensitivityTable, target_bits: float, tol: float = 0.01, max_layers: int = 8,
                      scale_bits: int = 32) -> SearchResult:
    """Brute force over every bit assignment (|bits|^L): lowest sum of zeta with size within tolerance.

    Only for small L (a reference for tests and for judging Algorithm 1 on toy problems).
    """
    _check_target(table, target_bits, tol, scale_bits)
    L = len(table.layers)
    if L > max_layers:
        raise ValueError(f"exhaustive search over {len(table.bits)}^{L} assignments refused (max_layers={max_layers})")
    t0 = time.perf_counter()
    T = float(target_bits)
    w = np.array([li.n_weights for li in table.layers])
    fixed = sum(n_scales(li, table.granularity) * scale_bits for li in table.layers)
    best, best_key, count = None, None, 0
    for combo in itertools.product(range(len(table.bits)), repeat=L):
        count += 1
        s = int(fixed + sum(int(w[n]) * table.bits[k] for n, k in enumerate(combo)))
        ok = abs(s - T) <= tol * T
        cost = float(sum(table.zeta[n, k] for n, k in enumerate(combo)))
        key = (0, cost) if ok else (1, abs(s - T))
        if best_key is None or key < best_key:
            best_key = key
            best = ({li.name: table.bits[k] for li, k in zip(table.layers, combo)}, s)
    assert best is not None and best_key is not None
    return SearchResult(best[0], best[1], int(round(T)), None, count, best_key[0] == 0, "exhaustive",
                        time.perf_counter() - t0)
