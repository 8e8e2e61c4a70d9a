import json

import pytest
import torch

from megabit.cli import fmpq
from megabit.cli.main import main as megabit_main
from megabit.models.lic import LICConfig
from megabit.models.lic.checkpoint import save_codec
from megabit.search import QATConfig, QuantPlan, layer_infos, load_quantized, prepare_quantized, qat_finetune
from megabit.search.data import load_images

from .helpers import tiny_codec, write_images


def test_qat_then_save_and_load_reproduces_outputs(tmp_path):
    net = tiny_codec()
    infos = layer_infos(net)
    plan = QuantPlan(infos, {li.name: 3 for li in infos})
    prepare_quantized(net, plan, leak=0.01)
    images = load_images(write_images(tmp_path / "img", n=2))
    before = net.g_a[0].parametrizations.weight.original.detach().clone()
    hist = qat_finetune(net, images, QATConfig(lmbda=0.01, steps=3, batch=2, crop=64, lr=1e-3), log_every=1)
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert not torch.equal(before, net.g_a[0].parametrizations.weight.original)
    from megabit.search import save_quantized

    net.update(force=True)
    save_quantized(tmp_path / "q.pt", net, plan, LICConfig("scale-hyperprior", 8, 8).to_dict())
    net2, plan2, _ = load_quantized(tmp_path / "q.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.eval()(x)["x_hat"], net2(x)["x_hat"])
    assert plan2.bits == plan.bits
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError):
        load_quantized(tmp_path / "junk.pt")


def test_parse_size():
    assert fmpq.parse_size("1000") == 1000
    assert fmpq.parse_size("2.5Mbit") == 2.5e6
    assert fmpq.parse_size("3kB") == 24_000
    assert fmpq.parse_size("50%", 1000) == 500
    with pytest.raises(ValueError):
        fmpq.parse_size("12 parsecs")
    assert fmpq.parse_bits("2-4") == [2, 3, 4] and fmpq.parse_bits("8,2") == [2, 8]
    with pytest.raises(ValueError):
        fmpq.parse_bits("1-8")


def test_cli_end_to_end(tmp_path, capsys):
    data = write_images(tmp_path / "img", n=2)
    ck = tmp_path / "codec.pt"
    save_codec(ck, tiny_codec(), LICConfig("scale-hyperprior", 8, 8), lmbda=0.01)
    sens, plan, q = tmp_path / "s.json", tmp_path / "p.json", tmp_path / "q.pt"
    assert fmpq.main(["sensitivity", "--checkpoint", str(ck), "--data", str(data), "--n-images", "2",
                      "--crop", "64", "--bits", "2-8", "--out", str(sens)]) == 0
    assert fmpq.main(["search", "--sensitivity", str(sens), "--target-size", "60%", "--out", str(plan)]) == 0
    p = QuantPlan.load(plan)
    assert p.meta["method"] == "adaptive" and p.meta["iterations"] >= 1
    assert fmpq.main(["search", "--sensitivity", str(sens), "--target-size", "60%", "--method", "grid",
                      "--out", str(tmp_path / "pg.json")]) == 0
    assert fmpq.main(["search", "--sensitivity", str(sens), "--target-size", "60%", "--criterion", "bd-proxy",
                      "--kappa", "0.5", "--out", str(tmp_path / "pb.json")]) == 0
    pb = QuantPlan.load(tmp_path / "pb.json")
    assert pb.meta["criterion"] == "bd-proxy" and pb.meta["kappa"] == 0.5 and p.meta["criterion"] == "rd"
    assert fmpq.main(["qat", "--checkpoint", str(ck), "--plan", str(plan), "--data", str(data), "--steps", "2",
                      "--batch", "2", "--crop", "64", "--out", str(q)]) == 0
    assert fmpq.main(["eval", "--quantized", str(q), "--data", str(data), "--out", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["n_images"] == 2 and res["mean_bpp"] > 0 and res["size_bits"] == p.size_bits
    assert fmpq.main(["eval", "--checkpoint", str(ck), "--uniform-bits", "8", "--data", str(data)]) == 0
    assert fmpq.main(["eval", "--quantized", str(q), "--data", str(data), "--rate", "likelihood",
                      "--out", str(tmp_path / "el.json")]) == 0
    est = json.loads((tmp_path / "el.json").read_text())
    assert est["rate"] == "likelihood estimate" and est["mean_psnr"] == pytest.approx(res["mean_psnr"], abs=1e-4)
    capsys.readouterr()
    assert fmpq.main(["size", str(q), "--json"]) == 0
    sz = json.loads(capsys.readouterr().out)
    assert sz["plan_size_bits"] == p.size_bits and 0 < sz["total_bytes"] <= p.size_bits / 8 + 2 * len(sz["layers"]) + 64
    # user errors through the dispatcher: one line, exit status 2
    assert megabit_main(["fmpq", "search", "--sensitivity", str(sens), "--target-size", "1bit",
                         "--out", str(plan)]) == 2
    assert "cannot be met" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert megabit_main(["fmpq", "qat", "--checkpoint", str(ck), "--plan", str(tmp_path / "bad.json"),
                         "--data", str(data), "--out", str(q)]) == 2
    err = capsys.readouterr().err
    assert "corrupted plan" in err and len(err.strip().splitlines()) == 1
    assert megabit_main(["fmpq", "size", str(tmp_path / "bad.json")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_qat_is_deterministic_whatever_the_global_rng_state(tmp_path):
    images = load_images(write_images(tmp_path / "img", n=2))
    outs = []
    for burn in (0, 5):
        net = tiny_codec()
        infos = layer_infos(net)
        prepare_quantized(net, QuantPlan(infos, {li.name: 4 for li in infos}), leak=0.01)
        torch.manual_seed(123)
        torch.rand(burn)  # a process that ran other work first has another global RNG state
        state = torch.get_rng_state()
        hist = qat_finetune(net, images, QATConfig(lmbda=0.01, steps=2, batch=2, crop=64, lr=1e-3), log_every=1)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was
        outs.append(([h["loss"] for h in hist], net.g_a[0].parametrizations.weight.original.detach().clone()))
    assert outs[0][0] == outs[1][0] and torch.equal(outs[0][1], outs[1][1])
