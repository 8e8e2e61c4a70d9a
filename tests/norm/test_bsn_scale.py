"""BSN beyond the paper: per-channel shifts and a shift mantissa (scale (1 + m/2^B) 2^-k).

The paper's layer-shared shift is the default; these variants must keep every guarantee of it:
integer path = fake-quant, budget = packed bits, .mbit round trip, clear errors where unsupported.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from megabit.export import IntegerNQE, budget_table, pack_model, unpack_model
from megabit.fmt.mbit import encode_mbit, inspect_mbit, mbit_to_model, read_mbit
from megabit.norm import BitShiftNorm
from tests.conftest import make_bsn_model, tiny_cfg

VARIANTS = [dict(bsn_granularity="layer", bsn_mantissa_bits=1), dict(bsn_granularity="channel", bsn_mantissa_bits=0),
            dict(bsn_granularity="channel", bsn_mantissa_bits=1), dict(bsn_granularity="channel", bsn_mantissa_bits=2)]
IDS = ["layer-m1", "channel-m0", "channel-m1", "channel-m2"]


def test_forward_is_the_documented_integer_formula():
    bsn = BitShiftNorm(3, 0, granularity="channel", mantissa_bits=2)
    bsn.set_scale([2, 4, 5], [0, 1, 3])
    o = torch.tensor([3.0, -7.0, 12.0])
    with torch.no_grad():
        bsn.offset.copy_(o * torch.exp2(-bsn.total_shift().float()))
    acc = torch.randint(-500, 500, (2, 3, 4, 4)).float()
    M = torch.tensor([4.0, 5.0, 7.0]).reshape(1, 3, 1, 1)
    k = torch.tensor([4.0, 6.0, 7.0]).reshape(1, 3, 1, 1)  # shift + B
    assert torch.equal(bsn(acc), (acc * M + o.reshape(1, 3, 1, 1)) * torch.exp2(-k))
    assert bsn.int_offsets().tolist() == [3, -7, 12]


def test_default_is_the_papers_layer_shift():
    bsn = BitShiftNorm(4, shift=3)
    assert bsn.shift.ndim == 0 and int(bsn.multiplier()) == 1 and int(bsn.total_shift()) == 3


@settings(max_examples=30, deadline=None)
@given(st.floats(1e-4, 0.9), st.integers(0, 3))
def test_nearest_scale_is_nearest_in_log2(a, bits):
    bsn = BitShiftNorm(1, mantissa_bits=bits)
    k, m = bsn._nearest_scale(torch.tensor([a]))
    got = (1 + int(m) / 2**bits) * 2.0 ** -int(k)
    grid = [(1 + mm / 2**bits) * 2.0**-kk for kk in range(16) for mm in range(2**bits)]
    best = min(grid, key=lambda g: abs(np.log2(g) - np.log2(a)))
    assert abs(np.log2(got) - np.log2(a)) <= abs(np.log2(best) - np.log2(a)) + 1e-9


def test_channel_conversion_keeps_each_channels_scale_and_middle_threshold():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0, 1.5, -0.7]))
        bn.bias.copy_(torch.randn(6) * 0.3)
        bn.running_mean.copy_(torch.randn(6) * 40)
        bn.running_var.copy_(torch.rand(6) * 4e5 + 1e4)
    bsn = BitShiftNorm(6, offset_bits=16, granularity="channel", mantissa_bits=2)
    sign = bsn.init_from_batchnorm(bn)
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    s = bsn.multiplier().double() * torch.exp2(-bsn.total_shift().double())
    assert torch.all((torch.log2(s) - torch.log2(a.abs().double())).abs() <= 0.5 / 4 + 1e-6)  # within the grid's half step
    acc_mid = ((0.5 - (bn.bias - a * bn.running_mean)) / a).detach()  # BN output 1/2, before the sign flip
    y = bsn((acc_mid * sign).reshape(1, 6, 1, 1)).flatten()
    assert torch.allclose(y, torch.full_like(y, 0.5), atol=float(torch.exp2(-bsn.total_shift().float()).max()) + 1e-6)


@pytest.mark.parametrize("fit", [False, True], ids=["quantile", "fit"])
@pytest.mark.parametrize("bsn", VARIANTS, ids=IDS)
def test_integer_path_equals_fake_quant(bsn, fit):
    m = make_bsn_model(fit=fit, cfg=tiny_cfg(offset_bits=14), **bsn)
    assert m.cfg.bsn_granularity == bsn["bsn_granularity"] and m.cfg.bsn_mantissa_bits == bsn["bsn_mantissa_bits"]
    torch.manual_seed(1)
    x = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    net = IntegerNQE.from_model(m)
    alpha = m.head.log_alpha.exp()
    assert torch.equal(torch.round(m(x) / alpha).long(), net(x))


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(range(len(VARIANTS))))
def test_budget_equals_packed_bits_and_file_round_trip(seed, v):
    m = make_bsn_model(seed, **VARIANTS[v])
    net = IntegerNQE.from_model(m)
    data, nbits = pack_model(net)
    assert nbits == budget_table(m.cfg)["total_bits"]
    net2 = unpack_model(m.cfg, data)
    for a, b in zip(net.layers, net2.layers):
        assert np.array_equal(a.shift, b.shift) and np.array_equal(a.mant, b.mant)
        assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.codes, b.codes)
    blob = encode_mbit(net, coder="tans", raw_fallback=False)
    f = read_mbit(blob)
    assert inspect_mbit(f)["file_bytes"] == len(blob)
    back = mbit_to_model(f)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(IntegerNQE.from_model(back)(x), net(x))
    from megabit.export.streaming import StreamingIntegerNQE

    assert torch.equal(StreamingIntegerNQE(blob)(x), net(x))  # decoded one layer at a time, same logits


def test_per_channel_norm_bits_in_the_budget():
    base = budget_table(tiny_cfg())["total_bits"]
    ch = budget_table(tiny_cfg(bsn_granularity="channel", bsn_mantissa_bits=1))["total_bits"]
    channels = sum(L.out for L in tiny_cfg().layers)
    layers = len(tiny_cfg().layers)
    assert ch - base == channels * (4 + 1) - layers * 4


def test_bad_bsn_fields_are_refused():
    with pytest.raises(ValueError, match="granularity"):
        BitShiftNorm(4, granularity="pixel")
    with pytest.raises(ValueError, match="mantissa"):
        BitShiftNorm(4, mantissa_bits=5)
    with pytest.raises(ValueError, match="unknown BSN fields"):
        make_bsn_model(bsn_scale="channel")


def test_state_dicts_without_a_mantissa_still_load():
    old = BitShiftNorm(4, shift=5)
    sd = {k: v for k, v in old.state_dict().items() if k != "mant"}  # as written before session 34
    new = BitShiftNorm(4)
    new.load_state_dict(sd)
    assert int(new.shift) == 5 and int(new.mant) == 0


def test_fit_sample_size_and_seed():
    """The fitted conversion sees ``samples`` positions per channel drawn with ``sample_seed``: with every
    position in the sample the draw cannot matter; with a few positions it does; zero positions is refused."""

    def offsets(samples, sample_seed, **bsn):
        m = make_bsn_model(fit=True, samples=samples, sample_seed=sample_seed, **bsn)
        return torch.cat([b.norm.offset.flatten() for b in m.blocks])

    every = 32 * 32 * 32  # make_bsn_model's 32 calibration images: the first layer's positions; deeper layers have fewer
    assert torch.equal(offsets(every, 0), offsets(every, 1))
    few = [offsets(16, s, bsn_granularity="channel", bsn_mantissa_bits=1) for s in range(3)]
    assert not (torch.equal(few[0], few[1]) and torch.equal(few[0], few[2]))
    with pytest.raises(ValueError, match="samples"):
        offsets(0, 0)
