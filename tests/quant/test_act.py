import pytest
import torch
from hypothesis import given, strategies as st

from megabit.quant import HWMSB, hwmsb_codes, clamp_leaky, round_ste, sign_ste


def test_hwmsb_levels_and_thresholds():
    y = torch.tensor([-1.0, 0.0, 0.2499, 0.25, 0.4999, 0.5, 0.7499, 0.75, 0.99, 1.0, 5.0])
    assert hwmsb_codes(y).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
    assert hwmsb_codes(torch.linspace(-1, 2, 1000)).unique().tolist() == [0, 1, 2, 3]


def test_hwmsb_round_mode():
    assert hwmsb_codes(torch.tensor([0.1, 0.2, 0.6, 0.9]), mode="round").tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        hwmsb_codes(torch.zeros(1), mode="ceil")


def test_hwmsb_ste_gradient():
    y = torch.tensor([-0.5, 0.3, 0.9, 1.5], requires_grad=True)
    HWMSB()(y).sum().backward()
    assert y.grad.tolist() == [0.0, 4.0, 4.0, 0.0]


@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=50))
def test_hwmsb_matches_integer_shift(vals):
    # floor(4 * a * 2^-k) == a >> (k - 2) for integer accumulators a: the integer-path identity
    a = torch.tensor([int(v * 100) for v in vals], dtype=torch.int64)
    for k in (2, 5, 9):
        y = a.double() * 2.0**-k
        ref = torch.bitwise_right_shift(a, k - 2).clamp(0, 3)
        assert torch.equal(hwmsb_codes(y).long(), ref)


def test_ste_ops():
    x = torch.tensor([0.4, -1.6, 2.5], requires_grad=True)
    (round_ste(x) + sign_ste(x)).sum().backward()
    assert x.grad.tolist() == [2.0, 1.0, 1.0]
    x = torch.tensor([-3.0, 0.0, 3.0], requires_grad=True)
    clamp_leaky(x, -1, 1, 0.25).sum().backward()
    assert x.grad.tolist() == [0.25, 1.0, 0.25]
