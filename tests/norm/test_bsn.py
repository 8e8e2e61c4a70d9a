import copy

import pytest
import torch

from megabit.norm import BitShiftNorm


def test_shift_and_offsets_from_batchnorm():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    bn.running_mean = torch.randn(8) * 10
    bn.running_var = torch.rand(8) * 100 + 1
    bn.weight.data = torch.randn(8)
    bn.bias.data = torch.randn(8) * 0.3
    bsn = BitShiftNorm(8)
    sign = bsn.init_from_batchnorm(bn, quantile=0.9)
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    assert torch.equal(sign, torch.where(a < 0, -1.0, 1.0))
    k = int(bsn.shift)
    q = torch.quantile(a.abs(), 0.9)
    assert abs(-k - torch.log2(q).item()) <= 0.5 + 1e-6  # nearest power of two
    # the middle HWMSB threshold (y = 1/2) sits where BN puts it (within one accumulator unit)
    acc_mid_bn = (0.5 - (bn.bias - a * bn.running_mean)) / a.abs()
    y = bsn(acc_mid_bn.detach().reshape(1, 8, 1, 1)).flatten()
    assert torch.all((y - 0.5).abs() <= 2.0 ** -k + 1e-6)


def test_offsets_are_integers_in_range():
    bsn = BitShiftNorm(4, shift=3, offset_bits=6)
    bsn.offset.data = torch.tensor([0.3, -100.0, 100.0, 1.26])
    assert bsn.int_offsets().tolist() == [2, -32, 31, 10]


def test_forward_traces_without_graph_break():
    # the shift is read as a tensor, not int(): inside a model that was a graph break per BSN layer
    from megabit.models import NQE, LayerSpec, NQEConfig

    torch.manual_seed(0)
    net = NQE(NQEConfig(layers=(LayerSpec(8, levels=3, pool=True), LayerSpec(8, levels=2))))
    x = torch.randn(4, 3, 8, 8)
    net(x)  # BN statistics and quantizer steps
    net.convert_to_bsn().train()
    ex = torch._dynamo.explain(net)(x)
    assert not [b for b in ex.break_reasons if any(f.filename.endswith("bsn.py") for f in b.user_stack)]
    bsn = net.blocks[0].norm
    acc = torch.randn(2, 8, 3, 3) * 16
    o = bsn.int_offsets().reshape(1, 8, 1, 1).float()
    assert torch.equal(bsn(acc), (acc + o) * 2.0 ** -int(bsn.shift))


def test_fit_recovers_a_shift_and_offsets_that_reproduce_the_target_codes():
    from megabit.quant.act import hwmsb_codes

    torch.manual_seed(0)
    acc = torch.randn(6, 3000) * 40  # accumulators of 6 channels
    k_true, o_true = 5, torch.tensor([-10.0, 0.0, 7.0, 20.0, -33.0, 3.0])
    target = hwmsb_codes((acc + o_true[:, None]) * 2.0**-k_true)
    bsn = BitShiftNorm(6, shift=4)  # the quantile's guess, one off
    rep = bsn.fit_(acc, target, hwmsb_codes, shift_search=2)
    assert rep["shift"] == k_true and rep["quantile_shift"] == 4
    assert set(rep["code_mse"]) == {"2", "3", "4", "5", "6"}
    got = bsn(acc.T.reshape(-1, 6, 1, 1)).reshape(-1, 6).T
    assert (hwmsb_codes(got) != target).float().mean() < 0.01
    # mismatch loss too; a bad loss name is refused
    assert BitShiftNorm(6, shift=4).fit_(acc, target, hwmsb_codes, loss="mismatch")["shift"] == k_true
    with pytest.raises(ValueError, match="loss"):
        BitShiftNorm(6, shift=4).fit_(acc, target, hwmsb_codes, loss="l1")


def test_calibrated_conversion_matches_the_bn_codes_better_than_the_quantile():
    from megabit.models import NQE, LayerSpec, NQEConfig

    torch.manual_seed(0)
    net = NQE(NQEConfig(layers=(LayerSpec(16, levels=5), LayerSpec(16, levels=3, pool=True), LayerSpec(16, levels=2))))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # channel scales spread over 4x, as after training
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.3, 0.6)
    x = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    with torch.no_grad():
        net.train()(x)
    net.eval()
    q, f = copy.deepcopy(net).convert_to_bsn(), copy.deepcopy(net).convert_to_bsn(x)
    assert f.cfg.norm == "bsn" and len(f.bsn_fit) == 3 and not f.training

    def code_mse(m):  # per layer, against the BN network on the calibration images
        xb, xm, out = net.prepare_input(x), m.prepare_input(x), []
        with torch.no_grad():
            for bb, mb in zip(net.blocks, m.blocks):
                xb, xm = bb(xb), mb(xm)
                out.append(float((xb - xm).pow(2).mean()))
        return out

    eq, ef = code_mse(q), code_mse(f)
    assert ef[0] < eq[0] and sum(ef) < sum(eq)
    with pytest.raises(ValueError, match="calibration images"):
        copy.deepcopy(net).convert_to_bsn(torch.zeros(4, 1, 12, 12, dtype=torch.uint8))
