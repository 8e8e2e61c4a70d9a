"""Per-tensor (one scale per layer) weight quantization of codecs: levels, exact sizes, sensitivity,
search, QAT file and packed file all carry the granularity; per-channel stays the default."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from megabit.cli.fmpq import main as fmpq_main
from megabit.search import (FakeQuant, LayerInfo, QuantPlan, SensitivityTable, adaptive_search, apply_bits,
                            export_codes, layer_infos, layer_sensitivity, load_quantized, plan_size_bits)
from megabit.search.quantize import fake_quantize
from tests.search.helpers import tiny_codec, write_images


@given(bits=st.integers(2, 10), out=st.integers(1, 6), seed=st.integers(0, 10**6))
@settings(max_examples=30, deadline=None)
def test_per_tensor_grid_is_one_absmax_step(bits, out, seed):
    w = torch.randn(out, 3, 2, 2, generator=torch.Generator().manual_seed(seed))
    m = 2 ** (bits - 1) - 1
    s = w.abs().max() / m
    q = fake_quantize(w, bits, per_channel=False)
    codes = q / s
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.abs().max().round() == m  # the largest weight lands on the top level
    fq = FakeQuant(w, bits, per_channel=False)
    assert fq.scale.shape == (1,) and torch.allclose(fq(w), q)
    # both round to the nearest level: error <= half a step, and a channel's step is never above the layer's
    assert (q - w).abs().max() <= s / 2 + 1e-6
    assert (fake_quantize(w, bits) - w).abs().max() <= s / 2 + 1e-6


def test_sizes_count_one_scale_per_layer():
    layers = [LayerInfo("a", 100, 8, "Conv2d"), LayerInfo("b", 50, 4, "ConvTranspose2d")]
    bits = {"a": 4, "b": 2}
    assert plan_size_bits(layers, bits) == 400 + 100 + 32 * 12
    assert plan_size_bits(layers, bits, granularity="tensor") == 400 + 100 + 32 * 2
    assert QuantPlan(layers, bits, granularity="tensor").size_bits == 564
    with pytest.raises(ValueError, match="granularity"):
        QuantPlan(layers, bits, granularity="group")


def test_plan_file_keeps_granularity_and_old_files_read_as_channel(tmp_path):
    layers = [LayerInfo("a", 100, 8, "Conv2d")]
    p = QuantPlan(layers, {"a": 3}, granularity="tensor")
    p.save(tmp_path / "p.json")
    back = QuantPlan.load(tmp_path / "p.json")
    assert back.granularity == "tensor" and back.size_bits == p.size_bits
    d = json.loads((tmp_path / "p.json").read_text())
    del d["granularity"], d["size_bits"]  # a plan written before the option existed
    assert QuantPlan.from_dict(d).granularity == "channel"
    d["granularity"] = "tensor"
    d["size_bits"] = p.size_bits + 1  # the stored size no longer matches: refused
    with pytest.raises(ValueError, match="corrupted"):
        QuantPlan.from_dict(d)


def test_sensitivity_search_and_apply_use_one_scale_per_layer():
    net = tiny_codec()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tt = layer_sensitivity(net, x, 0.01, bits=[2, 4, 8], granularity="tensor")
    tc = layer_sensitivity(net, x, 0.01, bits=[2, 4, 8])
    assert tt.granularity == "tensor" and tc.granularity == "channel"
    assert not np.allclose(tt.zeta, tc.zeta)  # a coarser quantizer, another table
    back = SensitivityTable.from_dict(json.loads(json.dumps(tt.to_dict())))
    assert back.granularity == "tensor"
    full = plan_size_bits(tt.layers, {li.name: 8 for li in tt.layers}, granularity="tensor")
    res = adaptive_search(tt, 0.6 * full, tol=0.05)
    plan = res.to_plan(tt)
    assert plan.granularity == "tensor" and plan.size_bits == res.size_bits
    assert res.size_bits == plan_size_bits(tt.layers, res.bits, granularity="tensor")
    apply_bits(net, plan.bits, granularity="tensor")
    codes = export_codes(net)
    assert all(v["scale"].numel() == 1 for v in codes.values())


def test_cli_per_tensor_pipeline_to_packed_file(tmp_path, capsys):
    from megabit.models.lic import LICConfig
    from megabit.models.lic.checkpoint import save_codec

    net = tiny_codec()
    ck = tmp_path / "c.pt"
    save_codec(ck, net, LICConfig("scale-hyperprior", 8, 8), lmbda=0.01)
    data = write_images(tmp_path / "img", n=2, size=64)
    sens, plan, q, mb = (tmp_path / n for n in ("s.json", "p.json", "q.pt", "q.mbit"))
    assert fmpq_main(["sensitivity", "--checkpoint", str(ck), "--data", str(data), "--n-images", "2", "--crop", "64",
                      "--bits", "2-8", "--granularity", "tensor", "--out", str(sens)]) == 0
    assert fmpq_main(["search", "--sensitivity", str(sens), "--target-size", "60%", "--tol", "0.05",
                      "--out", str(plan)]) == 0
    assert "per-tensor scales" in capsys.readouterr().out
    assert fmpq_main(["qat", "--checkpoint", str(ck), "--plan", str(plan), "--data", str(data), "--steps", "2",
                      "--batch", "2", "--crop", "64", "--out", str(q)]) == 0
    model, p, _ = load_quantized(q)
    assert p.granularity == "tensor" and all(v["scale"].numel() == 1 for v in export_codes(model).values())
    assert fmpq_main(["pack", str(q), "-o", str(mb)]) == 0
    model2, p2, _ = load_quantized(mb)
    assert p2.granularity == "tensor" and p2.size_bits == p.size_bits
    with torch.no_grad():
        for name in p.bits:
            assert torch.equal(model.get_submodule(name).weight, model2.get_submodule(name).weight)
    out = tmp_path / "e.json"
    assert fmpq_main(["eval", "--checkpoint", str(ck), "--uniform-bits", "8", "--granularity", "tensor",
                      "--data", str(data), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    infos = layer_infos(tiny_codec())
    assert r["granularity"] == "tensor" and r["size_bits"] == sum(li.n_weights * 8 + 32 for li in infos)
