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
