import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from megabit.search import (
    QuantPlan,
    SensitivityTable,
    adaptive_search,
    allocate,
    exhaustive_search,
    grid_search,
    layer_sensitivity,
    plan_size_bits,
    rd_loss_value,
    size_at_beta,
    size_bounds,
)
from megabit.search.quantize import quantizable_layers, temporarily_quantized

from .helpers import random_table, tiny_codec


def test_sensitivity_matches_definition():
    import torch

    net = tiny_codec()
    x = torch.rand(2, 3, 64, 64)
    t = layer_sensitivity(net, x, 0.01, bits=[2, 8], layers=["g_s.6", "h_s.4"])
    assert t.zeta.shape == (2, 2) and t.meta["forward_passes"] == 5
    fp = rd_loss_value(net, x, 0.01)["loss"]
    m = dict(quantizable_layers(net))["h_s.4"]
    with temporarily_quantized(m, 2):
        q = rd_loss_value(net, x, 0.01)["loss"]
    assert t.zeta_of("h_s.4", 2) == pytest.approx((q - fp) / fp, rel=1e-9)
    assert abs(t.zeta_of("g_s.6", 8)) < abs(t.zeta_of("g_s.6", 2))
    # bd-proxy: relative rate change + kappa x relative MSE change, from the stored terms
    with temporarily_quantized(m, 2):
        qt = rd_loss_value(net, x, 0.01)
    f = rd_loss_value(net, x, 0.01)
    for kappa in (1.0, 0.5):
        b = t.rescored("bd-proxy", kappa)
        want = (qt["bpp"] - f["bpp"]) / f["bpp"] + kappa * (qt["mse"] - f["mse"]) / f["mse"]
        assert b.zeta_of("h_s.4", 2) == pytest.approx(want, rel=1e-9)
        assert b.meta["criterion"] == "bd-proxy" and t.meta["criterion"] == "rd"
    assert t.rescored("rd") is t
    with pytest.raises(ValueError, match="unknown sensitivity criterion"):
        t.rescored("psnr")
    old = SensitivityTable(t.layers, t.bits, t.zeta, t.rd_float, t.lmbda, {})
    with pytest.raises(ValueError, match="recompute it"):
        old.rescored("bd-proxy")


@given(seed=st.integers(0, 10**6), n=st.integers(1, 12), mode=st.sampled_from(["scan", "lowest"]))
@settings(max_examples=40, deadline=None)
def test_size_is_non_increasing_in_beta(seed, n, mode):
    t = random_table(np.random.default_rng(seed), n)
    sizes = [size_at_beta(t, b, mode) for b in np.geomspace(1e-7, 1e3, 60)]
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    lo, hi = size_bounds(t)
    assert sizes[0] == hi and sizes[-1] == lo


def test_algorithm1_scan_vs_lowest():
    from megabit.search import LayerInfo

    t = SensitivityTable([LayerInfo("a", 10, 1, "Conv2d")], [2, 3, 4], np.array([[0.001, 0.5, 0.01]]), 1.0, 0.01)
    assert allocate(t, 0.1, "scan") == {"a": 4}  # 3 bits fails: the scan stops there
    assert allocate(t, 0.1, "lowest") == {"a": 2}


@given(seed=st.integers(0, 10**6), n=st.integers(2, 14), beta=st.floats(1e-5, 10.0))
@settings(max_examples=40, deadline=None)
def test_adaptive_hits_reachable_targets_within_one_percent(seed, n, beta):
    t = random_table(np.random.default_rng(seed), n)
    target = size_at_beta(t, beta)  # reachable by construction
    r = adaptive_search(t, target)
    assert r.converged and abs(r.size_bits - target) <= 0.01 * target
    assert r.size_bits == plan_size_bits(t.layers, r.bits)
    assert r.iterations <= 80
    g = grid_search(t, target, n=200)
    assert g.iterations == 200


@given(seed=st.integers(0, 10**6), n=st.integers(2, 30), frac=st.floats(0.05, 0.95), tol=st.sampled_from([0.0, 0.002, 0.01]))
@settings(max_examples=60, deadline=None)
def test_breakpoint_bracketing_agrees_with_log_bisection(seed, n, frac, tol):
    t = random_table(np.random.default_rng(seed), n, bits=tuple(range(2, 13)))
    lo, hi = size_bounds(t)
    target = lo + frac * (hi - lo)  # any target: reachable or inside a jump
    a = adaptive_search(t, target, tol=tol)
    b = adaptive_search(t, target, tol=tol, bracket="log")
    assert a.converged == b.converged and a.method == "adaptive" and b.method == "adaptive-log"
    if a.converged:  # both within tolerance (several steps of S may be)
        assert abs(a.size_bits - target) <= tol * target and abs(b.size_bits - target) <= tol * target
    else:  # target inside a jump: the same closest plan, found without bisecting down to min_ratio
        assert a.size_bits == b.size_bits and a.iterations <= b.iterations
    # after bracketing, at most ceil(log2(#distinct zeta)) + 1 evaluations
    n_z = len(np.unique(t.zeta))
    n_bracket = next(i for i, r in enumerate(a.trace) if i and (r["size_bits"] > target) != (a.trace[0]["size_bits"] > target)) \
        if any((r["size_bits"] > target) != (a.trace[0]["size_bits"] > target) for r in a.trace) else len(a.trace)
    assert a.iterations <= n_bracket + 1 + int(np.ceil(np.log2(n_z))) + 1


def test_adaptive_unreachable_target_returns_closest_not_above():
    from megabit.search import LayerInfo

    L = [LayerInfo("a", 1000, 1, "Conv2d"), LayerInfo("b", 1000, 1, "Conv2d")]
    t = SensitivityTable(L, [2, 4, 8], np.array([[1.0, 0.1, 0.01], [1.0, 0.1, 0.01]]), 1.0, 0.01)
    # sizes reachable: 16064, 8064, 4064 (+64 for the two 32-bit scales); target 12000 sits in a jump
    r = adaptive_search(t, 12_000)
    assert not r.converged and r.size_bits == 8064
    r_log = adaptive_search(t, 12_000, bracket="log")
    assert not r_log.converged and r_log.size_bits == 8064 and r.iterations < r_log.iterations


def test_exhaustive_agrees_with_sizes_and_beats_or_ties_adaptive_cost():
    from megabit.search.adaptive import predicted_cost

    t = random_table(np.random.default_rng(3), 4, bits=(2, 4, 6, 8))
    target = size_at_beta(t, 0.05)
    e = exhaustive_search(t, target, tol=0.01)
    a = adaptive_search(t, target, tol=0.01)
    assert e.converged and e.iterations == 4**4
    assert predicted_cost(t, e.bits) <= predicted_cost(t, a.bits) + 1e-12
    with pytest.raises(ValueError, match="refused"):
        exhaustive_search(random_table(np.random.default_rng(0), 9), target)


def test_unmeetable_targets_are_clear_errors():
    t = random_table(np.random.default_rng(1), 5)
    lo, hi = size_bounds(t)
    with pytest.raises(ValueError, match="below the all-2-bit"):
        adaptive_search(t, lo * 0.9)
    with pytest.raises(ValueError, match="above the all-8-bit"):
        grid_search(t, hi * 1.1)


def test_contract_check():
    class NotACodec(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="contract"):
        layer_sensitivity(NotACodec(), None, 0.01)

    class NoLikelihoods(nn.Module):
        def __init__(self):
            super().__init__()
            self.g_a = nn.Identity()
            self.g_s = nn.Identity()

        def forward(self, x):
            return {"x_hat": x}

    with pytest.raises(ValueError, match="likelihoods"):
        layer_sensitivity(NoLikelihoods(), None, 0.01)


def test_plan_file_roundtrip_and_corruption(tmp_path):
    t = random_table(np.random.default_rng(2), 4)
    plan = adaptive_search(t, size_at_beta(t, 0.1)).to_plan(t)
    plan.save(tmp_path / "p.json")
    back = QuantPlan.load(tmp_path / "p.json")
    assert back.bits == plan.bits and back.size_bits == plan.size_bits
    d = json.loads((tmp_path / "p.json").read_text())
    cases = {
        "trunc.json": (tmp_path / "p.json").read_text()[:50],
        "fmt.json": json.dumps({**d, "format": "other"}),
        "size.json": json.dumps({**d, "size_bits": d["size_bits"] + 1}),
        "bits.json": json.dumps({**d, "bits": {**d["bits"], "l0": 1}}),
        "names.json": json.dumps({**d, "bits": {"zz": 4}}),
        "nolayers.json": json.dumps({k: v for k, v in d.items() if k != "layers"}),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError):
            QuantPlan.load(tmp_path / name)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError):
        QuantPlan.load(tmp_path / "bin.json")


def test_sensitivity_file_roundtrip_and_corruption(tmp_path):
    t = random_table(np.random.default_rng(4), 3)
    t.save(tmp_path / "s.json")
    back = SensitivityTable.load(tmp_path / "s.json")
    assert np.array_equal(back.zeta, t.zeta) and back.bits == t.bits
    d = json.loads((tmp_path / "s.json").read_text())
    d["zeta"] = d["zeta"][:2]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError):
        SensitivityTable.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupted"):
        SensitivityTable.load(tmp_path / "bad2.json")


@given(seed=st.integers(0, 10**6), n=st.integers(2, 20), frac=st.floats(0.05, 0.95))
@settings(max_examples=40, deadline=None)
def test_fill_budget_uses_leftover_budget_and_never_exceeds_it(seed, n, frac):
    from megabit.search import fill_budget
    from megabit.search.adaptive import predicted_cost

    t = random_table(np.random.default_rng(seed), n, bits=tuple(range(2, 13)))
    lo, hi = size_bounds(t)
    target = lo + frac * (hi - lo)
    r = adaptive_search(t, target * 0.995, tol=0.005)
    bits, steps = fill_budget(t, r.bits, target)
    size = plan_size_bits(t.layers, bits)
    assert r.size_bits <= size <= target
    assert predicted_cost(t, bits) <= predicted_cost(t, r.bits) + 1e-12  # every step lowers the zeta sum
    assert all(bits[k] >= r.bits[k] for k in bits) and (steps > 0) == (bits != r.bits)
