"""Activation (layer-input) quantization of codecs: levels, calibration, gradients, QAT file, packed
file and its validation."""

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

from megabit.cli.fmpq import main as fmpq_main
from megabit.fmt.mbit import MbitError
from megabit.fmt.mbit_lic import encode_lic_mbit, read_lic_mbit
from megabit.models.lic import LICConfig
from megabit.search import (ActQuant, QuantPlan, act_quant_modules, apply_act_quant, calibrate_act_quant, layer_infos,
                            load_quantized, prepare_quantized)
from tests.search.helpers import tiny_codec, write_images


@given(bits=st.integers(2, 10), signed=st.booleans(), seed=st.integers(0, 10**6))
@settings(max_examples=40, deadline=None)
def test_levels_and_calibration(bits, signed, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(200, generator=g) * 3
    if signed:
        x = x - 1.5
    aq = ActQuant(bits)
    aq.calibrate_from(x)
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    assert int(aq.qmin) == lo and aq.qmax == hi
    with torch.no_grad():
        y = torch.cat([x, 10 * x, torch.tensor([-100.0, 100.0])])
        lv = aq(y) / aq.scale
    assert torch.allclose(lv, lv.round(), atol=1e-3) and lv.min() >= lo - 1e-3 and lv.max() <= hi + 1e-3
    with torch.no_grad():  # inside the calibrated range: error <= half a step
        assert (aq(x) - x).abs().max() <= aq.scale / 2 + 1e-5


def test_gradients_reach_input_and_scale():
    aq = ActQuant(4)
    aq.calibrate_from(torch.tensor([-1.0, 1.0]))
    x = torch.tensor([-3.0, -0.3, 0.2, 0.9, 5.0], requires_grad=True)
    aq(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # STE inside, clipped outside (leak 0)
    assert aq.log_scale.grad is not None and aq.log_scale.grad.abs() > 0
    assert aq.qmin.grad is None


def test_codec_calibration_and_error_shrinks_with_bits():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = tiny_codec("mean-scale-hyperprior")
    with torch.no_grad():
        want = ref(x)["x_hat"]
    errs = {}
    for b in (3, 8):
        net = tiny_codec("mean-scale-hyperprior")
        names = [li.name for li in layer_infos(net)]
        apply_act_quant(net, names, b)
        cal = calibrate_act_quant(net, x)
        assert set(cal) == set(names) and cal["g_a.0"]["qmin"] == 0  # the image is never negative
        assert cal["g_a.2"]["qmin"] < 0  # after GDN: signed
        with torch.no_grad():
            errs[b] = float((net(x)["x_hat"] - want).abs().mean())
    assert 0 < errs[8] < errs[3]
    with pytest.raises(ValueError, match="already"):
        apply_act_quant(net, ["g_a.0"], 8)
    with pytest.raises(ValueError, match="activation bit-width"):
        QuantPlan(layer_infos(ref), {li.name: 8 for li in layer_infos(ref)}, act_bits=1)
    with pytest.raises(ValueError, match="no activation quantizers"):
        calibrate_act_quant(tiny_codec(), x)


def test_invalid_quantizer_in_a_file_is_refused():
    net = tiny_codec()
    infos = layer_infos(net)
    plan = QuantPlan(infos, {li.name: 6 for li in infos}, act_bits=8)
    prepare_quantized(net, plan, calib=torch.rand(1, 3, 64, 64))
    net.update(force=True)
    cfg = LICConfig("scale-hyperprior", 8, 8).to_dict()
    back, p2, _ = read_lic_mbit(encode_lic_mbit(net, plan, cfg))
    assert p2.act_bits == 8
    for name, aq in act_quant_modules(net).items():
        assert torch.equal(aq.log_scale, act_quant_modules(back)[name].log_scale)
    with torch.no_grad():
        act_quant_modules(net)["g_s.2"].qmin.fill_(5.0)
    with pytest.raises(MbitError, match="activation quantizer of g_s.2"):
        read_lic_mbit(encode_lic_mbit(net, plan, cfg))


def test_cli_qat_with_act_bits_eval_and_pack(tmp_path):
    from megabit.models.lic.checkpoint import save_codec

    net = tiny_codec()
    ck = tmp_path / "c.pt"
    save_codec(ck, net, LICConfig("scale-hyperprior", 8, 8), lmbda=0.01)
    data = write_images(tmp_path / "img", n=2, size=64)
    plan = tmp_path / "p.json"
    QuantPlan(layer_infos(net), {li.name: 8 for li in layer_infos(net)}).save(plan)
    q, mb = tmp_path / "q.pt", tmp_path / "q.mbit"
    assert fmpq_main(["qat", "--checkpoint", str(ck), "--plan", str(plan), "--data", str(data), "--steps", "3",
                      "--batch", "2", "--crop", "64", "--act-bits", "8", "--n-calib", "2", "--out", str(q)]) == 0
    model, p, _ = load_quantized(q)
    assert p.act_bits == 8 and len(act_quant_modules(model)) == len(p.bits)
    outs = []
    for src in (q, mb):
        if src == mb:
            assert fmpq_main(["pack", str(q), "-o", str(mb)]) == 0
        out = tmp_path / f"e_{src.suffix[1:]}.json"
        assert fmpq_main(["eval", "--quantized", str(src), "--data", str(data), "--out", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0]["act_bits"] == 8 and outs[0]["mean_psnr"] == outs[1]["mean_psnr"]
    assert outs[0]["mean_bpp"] == outs[1]["mean_bpp"]
    with torch.no_grad():  # the input quantizers act: switching them off changes the output
        x = torch.rand(1, 3, 64, 64)
        a = model(x)["x_hat"]
        for aq in act_quant_modules(model).values():
            aq.log_scale.fill_(-14.0)
        assert not torch.equal(a, model(x)["x_hat"])
