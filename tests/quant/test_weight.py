import math

import numpy as np
import pytest
import torch

from megabit.quant import QuantSpec, WeightQuantizer, bits_per_code, code_range


@pytest.mark.parametrize("levels,expected", [(2, [-1, 1]), (3, [-1, 0, 1]), (4, [-3, -1, 1, 3]), (5, [-2, -1, 0, 1, 2]), (7, [-3, -2, -1, 0, 1, 2, 3])])
def test_levels_emitted(levels, expected):
    torch.manual_seed(0)
    q = WeightQuantizer(QuantSpec(levels=levels))
    c = q.codes(torch.randn(20000))
    assert code_range(levels) == expected
    assert sorted(c.unique().int().tolist()) == expected


@pytest.mark.parametrize("levels", [2, 3, 4, 5])
@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform"])
def test_heq_equalizes_occupancy(levels, dist):
    torch.manual_seed(1)
    w = {"normal": torch.randn(50000), "laplace": torch.distributions.Laplace(0, 1).sample((50000,)),
         "uniform": torch.rand(50000) * 2 - 1}[dist]
    q = WeightQuantizer(QuantSpec(levels=levels))
    occ = q.occupancy(q.codes(w))
    if levels in (2, 3):  # one threshold: exact equalization
        assert max(occ) - min(occ) < 0.02, occ
    else:  # least-squares step over 2 thresholds: near-equal, far from collapse
        assert min(occ) > 0.5 / levels and max(occ) < 1.6 / levels, occ


def test_ternary_step_is_twice_the_third_quantile():
    w = torch.randn(30001)
    q = WeightQuantizer(QuantSpec(levels=3))
    s = q.target_step(w)
    ref = 2 * torch.quantile(w.abs(), 1 / 3)
    assert torch.allclose(s, ref.reshape(1), rtol=1e-3)


def test_absmax_and_per_channel():
    w = torch.tensor([[0.5, -1.0, 0.25], [4.0, 2.0, -4.0]])
    q = WeightQuantizer(QuantSpec(levels=5, step_rule="absmax", per_channel=True), channels=2)
    c = q.codes(w)
    assert torch.equal(c, torch.tensor([[1.0, -2.0, 0.0], [2.0, 1.0, -2.0]]))
    assert torch.allclose(q(w), c * torch.tensor([[0.5], [2.0]]))


def test_ste_gradient_and_leaky_clip():
    q = WeightQuantizer(QuantSpec(levels=3, step_rule="fixed", leak=0.1))
    q.step.fill_(1.0)
    w = torch.tensor([0.2, -0.7, 3.0], requires_grad=True)
    q.codes(w).sum().backward()
    assert torch.allclose(w.grad, torch.tensor([1.0, 1.0, 0.1]))


def test_step_frozen_in_eval_and_ema_in_train():
    q = WeightQuantizer(QuantSpec(levels=3, momentum=0.5))
    w = torch.randn(1000)
    q.codes(w)
    s0 = q.step.clone()
    q.codes(w * 3)
    assert torch.allclose(q.step, s0 * 2, rtol=1e-4)  # EMA halfway to 3x
    q.eval()
    q.codes(w * 10)
    assert torch.allclose(q.step, s0 * 2, rtol=1e-4)


def test_bits_per_code():
    assert [bits_per_code(n) for n in (2, 3, 4, 5, 7, 8, 9, 15)] == [1, 2, 2, 3, 3, 3, 4, 4]
    with pytest.raises(ValueError):
        bits_per_code(1)


def test_odd_codes_are_sign_symmetric():
    # flipping the latent weights flips the codes exactly (used by the BN -> BSN sign fold)
    q = WeightQuantizer(QuantSpec(levels=5, step_rule="fixed"))
    q.step.fill_(0.3)
    w = torch.randn(5000)
    assert torch.equal(q.codes(-w), -q.codes(w))


@pytest.mark.parametrize("levels,per_channel", [(3, False), (5, False), (7, True), (4, False)])
def test_learned_step_is_a_parameter_with_the_lsq_gradient(levels, per_channel):
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    q = WeightQuantizer(QuantSpec(levels, "learned", per_channel), channels=8)
    ref = WeightQuantizer(QuantSpec(levels, "absmax", per_channel), channels=8)
    y = q(w)
    assert isinstance(q.step, torch.nn.Parameter) and "step" in q.state_dict()
    assert torch.allclose(q.step.detach(), ref.target_step(w).expand_as(q.step))  # absmax init
    assert torch.allclose(y, ref(w))  # same grid as absmax at init
    y.sum().backward()
    s = q.step.detach().reshape(-1, 1, 1, 1) if per_channel else q.step.detach()
    u = s if levels % 2 else s / 2
    c = q.codes(w).detach()
    m = levels // 2 if levels % 2 else levels - 1
    n_per = w.numel() // q.step.numel()
    g = 1 / math.sqrt(n_per * m)
    expect = (c - w / u) * (1 if levels % 2 else 0.5)  # d(c * u)/ds with u = s (odd) or s/2 (even)
    expect = (expect.reshape(8, -1).sum(1) if per_channel else expect.sum().reshape(1)) * g
    assert torch.allclose(q.step.grad, expect, rtol=1e-4, atol=1e-5)


def test_learned_step_descends_the_quantization_error_and_stays_put_otherwise():
    torch.manual_seed(1)
    w = torch.randn(64, 32, 3, 3)
    q = WeightQuantizer(QuantSpec(3, "learned"))
    opt = torch.optim.Adam(q.parameters(), lr=0.01)
    err0 = float(((q(w) - w) ** 2).mean().detach())
    for _ in range(200):
        opt.zero_grad()
        ((q(w) - w) ** 2).mean().backward()
        opt.step()
    err = float(((q(w) - w) ** 2).mean().detach())
    assert err < 0.8 * err0  # absmax (outlier-set) ternary grid -> near the MSE-optimal step
    s = q.step.detach().clone()
    q.eval()(w * 3)
    q.train()(w * 3)
    assert torch.equal(q.step.detach(), s)  # no EMA: only the optimizer moves a learned step
    with pytest.raises(ValueError, match="step_rule"):
        WeightQuantizer(QuantSpec(3, "lsq"))
