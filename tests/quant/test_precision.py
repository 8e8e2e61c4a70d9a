import json

import pytest
import torch

from megabit.quant.entropy_reg import hard_entropy
from megabit.quant.precision import PrecisionPlan, measure_layer, plan_precision


def _layers(seed=0, n=6000):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, generator=g)
    sparse = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.08)
    mid = torch.randn(n // 2, generator=g) * 0.1
    return {"dense": dense, "sparse": sparse, "mid": mid}


def test_measure_layer_entropy_and_error():
    L = _layers()
    cands = measure_layer("dense", L["dense"], (3, 5, 7, 9, 15))
    assert [c.levels for c in cands] == [3, 5, 7, 9, 15]
    errs = [c.error for c in cands]
    ents = [c.entropy for c in cands]
    assert all(a > b for a, b in zip(errs, errs[1:]))  # more bins, less distortion
    assert all(a < b for a, b in zip(ents, ents[1:]))  # ... and more bits
    assert all(c.bits_per_weight == c.entropy for c in cands)


def test_mostly_zero_layer_gets_its_bits_cheaply():
    L = _layers()
    plan = plan_precision(L, lam=0.02)
    d, s = plan.layer("dense"), plan.layer("sparse")
    assert s.levels >= d.levels
    assert s.bits_per_weight < 0.5 * d.bits_per_weight
    # the same number of bins costs far fewer bits on the mostly-zero layer
    for cs, cd in zip(s.candidates, d.candidates):
        assert cs.entropy < 0.6 * cd.entropy
    for l in plan.layers:
        assert f"{l.levels} bins" in l.reason and "b/w" in l.reason
        assert l.entropy == pytest.approx(min(c.entropy for c in l.candidates if c.levels == l.levels))


@pytest.mark.parametrize("frac", [0.35, 0.6, 0.9])
def test_budget_is_met(frac):
    L = _layers(1)
    lo = plan_precision(L, candidates=(3,), lam=0.0).total_bits
    hi = plan_precision(L, candidates=(15,), lam=0.0).total_bits
    budget = lo + frac * (hi - lo)
    plan = plan_precision(L, budget_bits=budget)
    assert plan.rule == "budget"
    assert plan.total_bits <= budget + 1e-6
    assert plan.total_bits >= lo
    # greedy stopped because no further distortion-reducing upgrade fits
    used = plan.total_bits
    for l in plan.layers:
        for c in l.candidates:
            if c.levels > l.levels and c.error < l.error:
                assert used + (c.bits_per_weight - l.bits_per_weight) * l.n_weights > budget
    base = plan_precision(L, candidates=(3,), lam=0.0)
    dist = lambda p: sum(l.error * l.n_weights for l in p.layers)
    assert dist(plan) < dist(base)


def test_budget_below_minimum_raises_and_one_rule_needed():
    L = _layers()
    with pytest.raises(ValueError, match="below the cheapest"):
        plan_precision(L, budget_bits=10.0)
    with pytest.raises(ValueError, match="exactly one"):
        plan_precision(L)
    with pytest.raises(ValueError, match="exactly one"):
        plan_precision(L, lam=1.0, budget_bits=1e6)


def test_lambda_trades_bits_for_distortion():
    L = _layers(2)
    cheap = plan_precision(L, lam=1.0)
    rich = plan_precision(L, lam=1e-4)
    assert cheap.total_bits < rich.total_bits
    assert all(l.levels == 15 for l in rich.layers)


def test_sensitivity_callable_and_roundtrip(tmp_path):
    L = _layers(3, n=2000)
    calls = []

    def sens(name, w_hat):
        calls.append(name)
        return float(((L[name] - w_hat) ** 2).mean())

    plan = plan_precision(L, candidates=(3, 5, 7), budget_bits=1.0e4, sensitivity=sens)
    assert len(calls) == 3 * 3 and plan.error_kind == "sensitivity"
    p = tmp_path / "plan.json"
    plan.save(p)
    back = PrecisionPlan.load(p)
    assert back == plan
    assert json.loads(p.read_text())["total_bits"] == pytest.approx(plan.total_bits)
    assert "total" in plan.summary()


def test_tans_bits_source_close_to_entropy():
    L = _layers(4, n=20000)
    cands = measure_layer("dense", L["dense"], (3, 7), bits_source="tans")
    for c in cands:
        assert c.entropy <= c.bits_per_weight < c.entropy + 0.1
