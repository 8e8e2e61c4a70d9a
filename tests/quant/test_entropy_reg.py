import math

import pytest
import torch

from megabit.quant.entropy_reg import (RateController, collect_quantizers, entropy_penalty, hard_bits_per_weight,
                                       hard_entropy, level_centres, soft_assign, soft_entropy)
from megabit.quant.weight import QuantSpec, WeightQuantizer


def _quantizer(levels, rule="absmax", w=None, per_channel=False):
    q = WeightQuantizer(QuantSpec(levels, rule, per_channel), channels=w.shape[0] if per_channel else 1).eval()
    if w is not None:
        q.codes(w.detach())  # sets the step once
    return q


def test_level_centres_match_quantizer_values():
    for n in (2, 3, 4, 5, 7, 15):
        q = _quantizer(n, "fixed")
        grid = torch.linspace(-20, 20, 4001)
        vals = torch.unique(q(grid))  # step 1: the values are the centres
        assert torch.allclose(vals, level_centres(n)), n


def test_hard_entropy_known_values():
    assert hard_entropy(torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)
    assert hard_entropy(torch.tensor([-1, 0, 1, 2])) == pytest.approx(2.0)
    assert hard_entropy(torch.zeros(10)) == 0.0


def test_gradient_flows_to_weights_not_step():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    q = _quantizer(5, "absmax", w)
    step_before = q.step.clone()
    bits = entropy_penalty([(q, w)], temperature=0.1)
    assert bits.requires_grad and bits.dim() == 0
    bits.backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    assert torch.equal(q.step, step_before)
    assert float(bits.detach()) == pytest.approx(w.numel() * float(soft_entropy(w, q.step, 5, 0.1).detach()), rel=1e-5)


def test_a_learned_step_gets_the_rate_gradient():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    q = WeightQuantizer(QuantSpec(5, "learned"))
    q(w)  # absmax init
    entropy_penalty([(q, w)], temperature=0.1).backward()
    assert q.step.grad is None and w.grad.abs().sum() > 0  # default: the rate moves the weights only
    entropy_penalty([(q, w)], temperature=0.1, step_grad=True).backward()
    # a larger step puts more weights in the zero bin: lower entropy, so the rate pushes the step up
    assert q.step.grad is not None and float(q.step.grad) < 0


@pytest.mark.parametrize("levels", [2, 3, 4, 5, 7, 15])
def test_soft_entropy_tends_to_hard_entropy(levels):
    torch.manual_seed(levels)
    w = torch.randn(20000) * 0.7
    q = _quantizer(levels, "absmax", w)
    hard = hard_entropy(q.codes(w), levels)
    errs = [abs(float(soft_entropy(w, q.step, levels, t)) - hard) for t in (0.3, 0.03, 0.003, 0.0003)]
    assert errs[-1] < 0.01
    assert errs[-1] <= errs[0]
    # the soft assignment itself becomes the hard nearest-level one
    a = soft_assign(w, q.step, levels, 1e-4)
    lv = torch.tensor(sorted(set(q.codes(w).tolist())))
    idx = a.argmax(-1)
    from megabit.quant.weight import code_range
    cr = torch.tensor(code_range(levels), dtype=torch.float32)
    assert (cr[idx] == q.codes(w)).float().mean() > 0.999
    assert set(lv.tolist()) <= set(cr.tolist())


def test_per_channel_step():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3) * torch.logspace(-2, 0, 8).reshape(-1, 1, 1, 1)
    q = _quantizer(7, "absmax", w, per_channel=True)
    h = float(soft_entropy(w, q.step, 7, 1e-4))
    assert h == pytest.approx(hard_entropy(q.codes(w), 7), abs=0.01)


def test_minimizing_entropy_alone_drives_weights_to_zero():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4000) * 0.8)
    q = _quantizer(5, "fixed")  # step 1: a fixed grid, so only the weights can move
    h0 = hard_entropy(q.codes(w.detach()), 5)
    zeros0 = float((q.codes(w.detach()) == 0).float().mean())
    # T = 0.3: at small T the gradient vanishes inside the bins and weights stall on the outer
    # levels (measured: T = 0.1, 150 Adam steps leaves H = 0.58 b/w; T = 0.3 reaches 0)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        entropy_penalty([(q, w)], temperature=0.3).backward()
        opt.step()
    c = q.codes(w.detach())
    h1 = hard_entropy(c, 5)
    assert h1 < 0.5 * h0, (h0, h1)
    assert float((c == 0).float().mean()) > max(0.9, zeros0)
    assert float(w.detach().abs().mean()) < 0.5 * 0.8 * math.sqrt(2 / math.pi)


def test_collect_quantizers_from_model_skips_float():
    from megabit.models.resnet import ResNet, ResNetConfig

    m = ResNet(ResNetConfig(levels=3, edge_levels=0))
    pairs = collect_quantizers(m)
    assert len(pairs) == 18
    bits = entropy_penalty(m, temperature=0.05)
    n = sum(w.numel() for _, w in pairs)
    assert 0 < float(bits.detach()) <= n * math.log2(3) + 1e-3
    assert len(collect_quantizers(ResNet(ResNetConfig(levels=0, edge_levels=0)))) == 0
    assert float(entropy_penalty(ResNet(ResNetConfig(levels=0, edge_levels=0)))) == 0.0


def test_max_samples_estimate_close():
    torch.manual_seed(0)
    w = torch.randn(50000)
    q = _quantizer(7, "absmax", w)
    full = float(entropy_penalty([(q, w)], 0.05))
    sub = float(entropy_penalty([(q, w)], 0.05, max_samples=10000, generator=torch.Generator().manual_seed(0)))
    assert sub == pytest.approx(full, rel=0.03)


def test_hard_bits_per_weight_is_the_weighted_entropy_and_leaves_the_step_alone():
    torch.manual_seed(0)
    w1, w2 = torch.randn(3000), torch.randn(1000) * (torch.rand(1000) < 0.2)
    q1 = WeightQuantizer(QuantSpec(5, "absmax")).train()
    q2 = WeightQuantizer(QuantSpec(7, "absmax")).train()
    q1.codes(w1), q2.codes(w2)
    steps = q1.step.clone(), q2.step.clone()
    got = hard_bits_per_weight([(q1, w1), (q2, w2)])
    want = (3000 * hard_entropy(q1.codes(w1.mul(1)).detach(), 5) + 1000 * hard_entropy(q2.codes(w2).detach(), 7)) / 4000
    q1.step.copy_(steps[0]), q2.step.copy_(steps[1])
    assert got == pytest.approx((3000 * hard_entropy(q1.eval().codes(w1), 5) + 1000 * hard_entropy(q2.eval().codes(w2), 7)) / 4000)
    assert abs(got - want) < 0.05
    # measuring in training mode must not move the (momentum-averaged) step: it is used in the graph
    q1.train(), q2.train()
    w1b = w1 * 3.0
    hard_bits_per_weight([(q1, w1b), (q2, w2)])
    assert torch.equal(q1.step, steps[0]) and q1.training and q2.training


def test_rate_controller_moves_beta_toward_the_target_and_validates():
    c = RateController(target=1.0, beta=0.5, gain=0.5)
    assert c.update(1.0) == pytest.approx(0.5)             # on target: unchanged
    assert c.update(1.5) == pytest.approx(0.5 * math.exp(0.25))  # too many bits: dearer
    b = c.beta
    assert c.update(0.5) < b                                 # too few: cheaper
    c2 = RateController(target=1.0, beta=1.0, beta_max=2.0)
    for _ in range(50):
        c2.update(10.0)
    assert c2.beta == 2.0
    with pytest.raises(ValueError):
        RateController(target=0.0, beta=1.0)
    with pytest.raises(ValueError):
        RateController(target=1.0, beta=0.0)


@pytest.mark.parametrize("target", [0.6, 1.2])
def test_rate_controller_closes_the_loop(target):
    """A data term pulls the weights back to a spread-out reference; the steered price meets the rate."""
    torch.manual_seed(1)
    ref = torch.randn(4000) * 1.2
    w = torch.nn.Parameter(ref.clone())
    q = _quantizer(5, "fixed")
    h_free = hard_bits_per_weight([(q, w)])
    assert h_free > 1.5 * target  # without the price the rate would be far above the target
    c = RateController(target=target, beta=0.05, gain=0.1)
    opt = torch.optim.Adam([w], lr=0.02)
    for i in range(600):
        if i % 5 == 0:
            c.update(hard_bits_per_weight([(q, w)]))
        opt.zero_grad()
        loss = 10 * ((w - ref) ** 2).mean() + c.beta * entropy_penalty([(q, w)], temperature=0.3) / w.numel()
        loss.backward()
        opt.step()
    h = hard_bits_per_weight([(q, w)])
    assert abs(h - target) < 0.12 * target, (h, c.beta)
