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
