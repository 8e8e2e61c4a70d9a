import pytest
import torch
from torch import nn

from megabit.search import (
    FakeQuant,
    apply_bits,
    bake,
    export_codes,
    fake_quantize,
    float_param_bits,
    layer_infos,
    plan_size_bits,
    quantizable_layers,
)
from megabit.search.quantize import temporarily_quantized

from .helpers import tiny_codec


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quantize_grid_per_output_channel(bits):
    w = torch.randn(5, 4, 3, 3)
    q = fake_quantize(w, bits)
    m = 2 ** (bits - 1) - 1
    s = w.abs().amax(dim=(1, 2, 3), keepdim=True) / m
    codes = q / s
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert torch.allclose(codes.abs().amax(dim=(1, 2, 3)), torch.full((5,), float(m)), atol=1e-4)
    # transposed conv: output channels on dim 1
    wt = torch.randn(4, 6, 5, 5)
    qt = fake_quantize(wt, bits, out_dim=1)
    st = wt.abs().amax(dim=(0, 2, 3), keepdim=True) / m
    assert torch.allclose((qt / st).abs().amax(dim=(0, 2, 3)), torch.full((6,), float(m)), atol=1e-4)


def test_bits_out_of_range():
    with pytest.raises(ValueError, match="bit-width"):
        fake_quantize(torch.randn(2, 2), 1)


def test_layers_and_sizes():
    net = tiny_codec()
    infos = layer_infos(net)
    assert [li.name for li in infos][:2] == ["g_a.0", "g_a.2"] and len(infos) == 14
    assert infos[4].kind == "ConvTranspose2d" and infos[4].channels == 8  # g_s.0: deconv(M, N)
    bits = {li.name: 4 for li in infos}
    assert plan_size_bits(infos, bits) == sum(li.n_weights * 4 + li.channels * 32 for li in infos)
    n_float = sum(p.numel() for p in net.parameters()) - sum(li.n_weights for li in infos)
    assert float_param_bits(net) == 32 * n_float


def test_temporarily_quantized_restores_exactly():
    net = tiny_codec()
    name, m = quantizable_layers(net)[3]
    before = m.weight.detach().clone()
    with temporarily_quantized(m, 2):
        assert len(m.weight.unique()) <= 3 * m.weight.shape[0]
    assert torch.equal(m.weight, before)


def test_apply_bits_bake_and_codes():
    net = tiny_codec()
    bits = {li.name: (2 if i % 2 else 6) for i, li in enumerate(layer_infos(net))}
    apply_bits(net, bits, learn_scale=False)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y1 = net(x)["x_hat"]
    codes = export_codes(net)
    for name, c in codes.items():
        m = 2 ** (c["bits"] - 1) - 1
        assert int(c["codes"].abs().max()) <= m
    bake(net)
    assert not any("parametrizations" in k for k in net.state_dict())
    with torch.no_grad():
        assert torch.allclose(net(x)["x_hat"], y1, atol=1e-6)
    with pytest.raises(ValueError, match="does not have"):
        apply_bits(net, {"nope": 4})


def test_leaky_clip_passes_gradient_to_weights_and_scale():
    w = nn.Parameter(torch.randn(3, 2, 3, 3))
    fq = FakeQuant(w, 3, leak=0.1)
    with torch.no_grad():
        fq.scale.mul_(0.3)  # now many weights fall outside the code range
    r = torch.rand(3, 2, 3, 3) + 0.5
    (fq(w) * r).sum().backward()
    outside = (w.detach() / (fq.scale.detach().view(-1, 1, 1, 1))).abs() > 3.5
    assert bool(outside.any()) and bool((~outside).any())
    assert torch.allclose(w.grad[~outside], r[~outside])
    assert torch.allclose(w.grad[outside], 0.1 * r[outside])  # leaky clip: small gradient outside
    assert fq.scale.grad is not None and bool((fq.scale.grad != 0).any())


def test_coded_size_of_peaked_codes_is_below_raw():
    from megabit.search import QuantPlan, coded_size, layer_infos, prepare_quantized

    from .helpers import tiny_codec

    net = tiny_codec()
    infos = layer_infos(net)
    prepare_quantized(net, QuantPlan(infos, {li.name: 6 for li in infos}), learn_scale=False)
    with torch.no_grad():  # Gaussian weights under an absmax step: codes crowd around zero
        for m in net.modules():
            if hasattr(m, "parametrizations"):
                w = m.parametrizations.weight.original
                w.copy_(torch.randn_like(w))
    r = coded_size(net)
    assert set(r["layers"]) == {li.name for li in infos}
    for name, v in r["layers"].items():
        assert v["bytes"] == min(v["raw_bytes"], v["payload_bytes"] + v["table_bytes"]) + v["scale_bytes"] + 1
        assert v["entropy_bits_per_weight"] < 6
    big = max(r["layers"].values(), key=lambda v: v["n_weights"])
    assert big["stored"] == "ans" and big["payload_bytes"] < 0.9 * big["raw_bytes"]
    assert r["total_bytes"] == sum(v["bytes"] for v in r["layers"].values())
