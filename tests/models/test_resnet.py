import json

import numpy as np
import pytest
import torch

from megabit.entropy import decode_array, encode_array
from megabit.models.resnet import (SCHEMES, ResNet, ResNetConfig, apply_levels, arch_config, entropy_report,
                                   export_codes, packed_size, quantized_layers, scheme_config)
from megabit.quant.entropy_reg import hard_entropy
from megabit.quant.weight import code_range

from ..conftest import load_recipe


def test_resnet20_shape_and_size():
    m = ResNet(ResNetConfig(levels=3))
    n = sum(p.numel() for p in m.parameters())
    assert 0.26e6 < n < 0.28e6
    conv_w = sum(mm.weight.numel() for mm in m.modules() if isinstance(mm, torch.nn.Conv2d))
    assert conv_w == 432 + 6 * 2304 + 4608 + 5 * 9216 + 18432 + 5 * 36864
    assert len(quantized_layers(m)) == 20 and len(quantized_layers(m, include_edges=False)) == 18
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert m.eval()(x).shape == (2, 10)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_schemes_forward_and_backward(scheme):
    torch.manual_seed(0)
    m = ResNet(scheme_config(scheme)).train()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    m(x).logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    lv = {mm.quant.spec.levels for _, mm in quantized_layers(m, include_edges=False)}
    assert lv == ({scheme_config(scheme).levels} if scheme_config(scheme).levels else set())


def test_config_roundtrip_and_validation():
    cfg = ResNetConfig(levels=5, layer_levels=tuple([3, 5, 7] * 6), step_rule="absmax", edge_levels=0)
    back = ResNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="18 entries"):
        ResNetConfig(layer_levels=(3, 5))
    with pytest.raises(ValueError, match="unknown"):
        ResNetConfig.from_dict({"levels": 3, "bogus": 1})
    with pytest.raises(ValueError, match="unknown scheme"):
        scheme_config("octonary")
    m = ResNet(cfg)
    assert [mm.quant.spec.levels for _, mm in quantized_layers(m)] == [3, 5, 7] * 6  # edges float
    assert m.conv1.quant.spec.levels == 0 and m.fc.quant.spec.levels == 0


@pytest.mark.parametrize("levels", [2, 3, 4, 7])
def test_export_codes_reproduce_the_weights(levels):
    torch.manual_seed(levels)
    m = ResNet(ResNetConfig(levels=levels)).eval()
    ex = export_codes(m)
    assert list(ex) == [n for n, _ in quantized_layers(m)]
    mods = dict(m.named_modules())
    for name, d in ex.items():
        assert set(np.unique(d["codes"]).tolist()) <= set(code_range(d["levels"]))
        u = torch.from_numpy(d["unit"])
        if u.numel() > 1:
            u = u.reshape(-1, *([1] * (d["codes"].ndim - 1)))
        w_hat = torch.from_numpy(d["codes"].astype(np.float32)) * u
        assert torch.equal(w_hat, mods[name].quant(mods[name].weight.detach()))
    assert ex["conv1"]["levels"] == 255 and ex["conv1"]["codes"].dtype == np.int8


def test_entropy_report_matches_codes_and_tans():
    torch.manual_seed(0)
    m = ResNet(ResNetConfig(levels=5, step_rule="absmax")).eval()
    rep = entropy_report(m, coder="tans")
    ex = export_codes(m)
    assert len(rep["layers"]) == 20
    for r in rep["layers"]:
        c = ex[r["name"]]["codes"]
        assert r["entropy_bits_per_weight"] == pytest.approx(hard_entropy(torch.from_numpy(c.astype(np.int64))), abs=1e-9)
        assert r["table_bytes"] > 0
        if r["n_weights"] >= 9216:  # large layers: the payload is within a few % of the entropy
            assert r["entropy_bits_per_weight"] <= r["coded_bits_per_weight"] < 1.05 * r["entropy_bits_per_weight"] + 0.05
    b = rep["body"]
    assert b["n_weights"] == sum(r["n_weights"] for r in rep["layers"]) - 432 - 640
    assert b["coded_with_tables_bits_per_weight"] > b["coded_bits_per_weight"] > b["entropy_bits_per_weight"]
    assert b["raw_bits_per_weight"] == 3
    # the symbols the report codes decode back exactly
    sym = (ex["blocks.8.conv2"]["codes"].astype(np.int64) + 2).reshape(-1)
    payload, freqs = encode_array(sym, coder="tans")
    assert np.array_equal(decode_array(payload, freqs), sym)
    size = packed_size(m, report=rep)
    assert size["total_bytes"] == sum(v for k, v in size.items() if k != "total_bytes")
    assert size["coded_weight_bytes"] == rep["all"]["payload_bytes"] + rep["all"]["table_bytes"]


def test_float_scheme_report_and_size():
    m = ResNet(SCHEMES["float"])
    rep = entropy_report(m)
    assert rep["layers"] == [] and rep["all"] == {"n_weights": 0}
    size = packed_size(m, report=rep)
    assert size["float_weight_bytes"] == 4 * sum(mm.weight.numel() for mm in m.modules() if isinstance(mm, (torch.nn.Conv2d, torch.nn.Linear)))


def test_apply_levels_keeps_weights():
    torch.manual_seed(0)
    m = ResNet(ResNetConfig(levels=15, step_rule="absmax"))
    m(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    new = apply_levels(m, {"blocks.0.conv1": 3, "blocks.8.conv2": 7})
    lv = dict((n, mm.quant.spec.levels) for n, mm in quantized_layers(new, include_edges=False))
    assert lv["blocks.0.conv1"] == 3 and lv["blocks.8.conv2"] == 7 and lv["blocks.4.conv1"] == 15
    assert new.cfg.layer_levels[0] == 3 and new.cfg.layer_levels[-1] == 7
    for (k, v), (k2, v2) in zip(m.state_dict().items(), new.state_dict().items()):
        assert k == k2
        if ".quant." not in k:
            assert torch.equal(v, v2)
    assert torch.equal(new.blocks[4].conv1.quant.step, m.blocks[4].conv1.quant.step)
    with pytest.raises(ValueError, match="not body conv"):
        apply_levels(m, {"conv1": 3})


def _load_recipe():
    return load_recipe("resnet_table1")


def _small_run(cifar_root, out, res, epochs: int) -> list[str]:
    """Recipe arguments for a tiny run (batch 8, 3/5-bin candidates, one thread)."""
    return ["--data-root", str(cifar_root), "--out", str(out), "--results", str(res), "--epochs", str(epochs),
            "--batch-size", "8", "--threads", "1", "--no-progress", "--candidates", "3,5"]


def test_table1_recipe_runs_and_resumes(tmp_path, cifar_root):
    recipe = _load_recipe()
    out, res = tmp_path / "run", tmp_path / "t1.json"
    argv = ["--data-root", str(cifar_root), "--out", str(out), "--results", str(res), "--schemes", "ternary,mixed-entropy",
            "--epochs", "2", "--batch-size", "8", "--threads", "1", "--no-progress", "--candidates", "3,5"]
    assert recipe.main(argv) == 0
    d = json.loads(res.read_text())
    assert set(d["schemes"]) == {"ternary", "mixed-entropy"} and d["epochs"] == 2 and "cpu" in d["hardware"]
    mixed = d["schemes"]["mixed-entropy"]
    assert set(mixed["config"]["layer_levels"]) <= {3, 5} and len(mixed["plan"]["layers"]) == 18
    assert mixed["file_bytes"] > 0 and 0 < mixed["entropy_bits_per_weight_body"] <= mixed["tans_bits_per_weight_body"]
    assert (out / "mixed-entropy" / "plan.json").exists()
    # resume: finished schemes are read back, not retrained
    before = (out / "ternary" / "result.json").read_text()
    assert recipe.main(argv + ["--resume"]) == 0
    assert (out / "ternary" / "result.json").read_text() == before


def test_table1_recipe_per_channel_and_distillation(tmp_path, cifar_root):
    recipe = _load_recipe()
    out, res = tmp_path / "run", tmp_path / "t1.json"
    base = _small_run(cifar_root, out, res, 2)
    assert recipe.main(base + ["--schemes", "float"]) == 0
    teacher = out / "float" / "model.pt"
    assert recipe.main(base + ["--schemes", "mixed-entropy", "--per-channel", "--teacher", str(teacher)]) == 0
    mixed = json.loads(res.read_text())["schemes"]["mixed-entropy"]
    assert mixed["config"]["per_channel"] is True
    # per-channel steps: one per output channel of every quantized layer, counted in the file size
    m = recipe.load_teacher(str(out / "mixed-entropy" / "model.pt"), torch.device("cpu"))
    assert m.blocks[0].conv1.quant.step.numel() == m.blocks[0].conv1.out_channels


def test_kd_loss_reduces_to_cross_entropy_and_matches_teacher():
    recipe = _load_recipe()
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    assert torch.allclose(recipe.kd_loss(s, t, y, 0.0, 4.0), torch.nn.functional.cross_entropy(s, y))
    # pure distillation is 0 exactly when the student's logits equal the teacher's (up to a shift)
    assert float(recipe.kd_loss(t + 3.0, t, y, 1.0, 4.0)) < 1e-6 < float(recipe.kd_loss(s, t, y, 1.0, 4.0))


def test_table1_recipe_rate_target_steers_beta(tmp_path, cifar_root):
    recipe = _load_recipe()
    out, res = tmp_path / "run", tmp_path / "t1.json"
    argv = ["--data-root", str(cifar_root), "--out", str(out), "--results", str(res), "--schemes", "mixed-entropy",
            "--epochs", "2", "--batch-size", "8", "--threads", "1", "--no-progress", "--candidates", "3,5",
            "--entropy-weight", "0.5", "--target-bpw", "0.3", "--rate-every", "1"]
    assert recipe.main(argv) == 0
    hist = json.loads(res.read_text())["details"]["mixed-entropy"]["history"]
    # before the plan (epoch 1) beta is the fixed --entropy-weight; after it the controller has raised it
    # (the 3/5-bin plan starts far above 0.3 b/w) and every epoch records the measured entropy
    assert hist[0]["beta_end"] == 0.5 and hist[1]["beta_end"] > 0.5
    assert all(h["hard_bits_per_weight"] > 0 for h in hist)


def test_table1_recipe_init_from_float(tmp_path, cifar_root):
    recipe = _load_recipe()
    out, res = tmp_path / "run", tmp_path / "t1.json"
    base = _small_run(cifar_root, out, res, 1)
    assert recipe.main(base + ["--schemes", "float"]) == 0
    src = out / "float" / "model.pt"
    fl = recipe.load_teacher(str(src), torch.device("cpu"))
    q = recipe.ResNet(recipe.scheme_config("mixed-entropy"))
    recipe.load_init_weights(q, str(src))
    assert torch.equal(q.blocks[3].conv1.weight, fl.blocks[3].conv1.weight)
    assert not bool(q.blocks[3].conv1.quant.initialized)  # steps come from the loaded weights
    assert recipe.main(base + ["--out", str(tmp_path / "r2"), "--schemes", "mixed-entropy", "--init", str(src)]) == 0
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(SystemExit, match="--init"):
        recipe.load_init_weights(q, str(bad))


def test_table1_recipe_ramp_target():
    recipe = _load_recipe()
    assert recipe.ramp_target(0.8, 1.6, 500, 400, 800, 0.0) == 0.8            # no ramp: the final target at once
    assert recipe.ramp_target(0.8, 1.6, 400, 400, 800, 0.5) == pytest.approx(1.6)  # starts at the plan's entropy
    assert recipe.ramp_target(0.8, 1.6, 500, 400, 800, 0.5) == pytest.approx(1.2)  # halfway through the ramp
    assert recipe.ramp_target(0.8, 1.6, 700, 400, 800, 0.5) == pytest.approx(0.8)  # after it: final


def test_table1_recipe_learned_step(tmp_path, cifar_root):
    recipe = _load_recipe()
    out, res = tmp_path / "run", tmp_path / "t1.json"
    argv = _small_run(cifar_root, out, res, 2) + ["--schemes", "mixed-entropy,5level-zp", "--step-rule", "learned"]
    with pytest.raises(SystemExit):  # a no-op flag is an error, not silence
        recipe.main(_small_run(cifar_root, out, res, 2) + ["--schemes", "mixed-entropy", "--rate-moves-step"])
    assert recipe.main(argv) == 0
    schemes = json.loads(res.read_text())["schemes"]
    assert all(schemes[s]["config"]["step_rule"] == "learned" for s in ("mixed-entropy", "5level-zp"))
    # the recipe writes the real packed file and reports its size
    assert all(schemes[s]["mbit_bytes"] == (out / s / "model.mbit").stat().st_size for s in schemes)
    m = recipe.load_teacher(str(out / "5level-zp" / "model.pt"), torch.device("cpu"))
    q = m.blocks[0].conv1.quant
    assert isinstance(q.step, torch.nn.Parameter) and bool(q.initialized)
    # the step moved away from its absmax start, and the exported codes rebuild the weights the net uses
    assert not torch.allclose(q.step.detach(), q.target_step(m.blocks[0].conv1.weight.detach()))
    codes = export_codes(m)
    name = "blocks.0.conv1"
    lay = dict(m.named_modules())[name]
    assert lay.quant.spec.step_rule == "learned"
    w = torch.as_tensor(codes[name]["codes"]).float() * torch.as_tensor(codes[name]["unit"]).reshape(-1, *[1] * 3)
    assert torch.allclose(w, lay.quant.eval()(lay.weight.detach()), atol=1e-6)


def test_resnet18_body_and_width():
    cfg = arch_config(scheme_config("mixed-entropy"), "resnet18")
    assert cfg.widths == (64, 128, 256, 512) and cfg.blocks_per_stage == 2 and cfg.name == "resnet18"
    m = ResNet(cfg)
    body = quantized_layers(m, include_edges=False)
    assert len(body) == 16  # 4 stages x 2 blocks x 2 convs; option-A shortcuts add no layer
    assert sum(mm.weight.numel() for _, mm in body) == 10_985_472  # the 3x3 convs of ResNet-18, bar the stem
    small = arch_config(scheme_config("ternary"), "resnet18", width=4)
    assert small.widths == (4, 8, 16, 32) and small.name == "resnet18-w4" and small.levels == 3
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert ResNet(small).eval()(x).shape == (2, 10)
    assert ResNetConfig.from_dict(json.loads(small.to_json())) == small
    with pytest.raises(ValueError, match="unknown arch"):
        arch_config(cfg, "resnet50")
    with pytest.raises(ValueError, match="width"):
        arch_config(cfg, "resnet18", width=0)


def test_table1_recipe_resnet18_with_sampled_penalty(tmp_path, cifar_root):
    recipe = _load_recipe()
    out, res = tmp_path / "run", tmp_path / "t1.json"
    argv = _small_run(cifar_root, out, res, 2) + ["--schemes", "mixed-entropy", "--arch", "resnet18", "--width", "4",
                                                  "--penalty-samples", "64"]
    assert recipe.main(argv) == 0
    d = json.loads(res.read_text())
    mixed = d["schemes"]["mixed-entropy"]
    assert "resnet18-w4" in d["study"] and mixed["config"]["widths"] == [4, 8, 16, 32]
    assert len(mixed["plan"]["layers"]) == 16 and mixed["mbit_bytes"] == (out / "mixed-entropy" / "model.mbit").stat().st_size
    with pytest.raises(SystemExit):  # sampling needs per-tensor steps
        recipe.main(argv + ["--per-channel"])
    with pytest.raises(SystemExit, match="2"):  # a usage error before any data is read, not a ValueError
        recipe.main(argv + ["--width", "0"])


def test_context_entropy_study_sees_zero_kernels_and_not_iid_noise():
    import numpy as np

    from tests.conftest import load_recipe

    study = load_recipe("resnet_context_entropy")
    rng = np.random.default_rng(0)
    iid = rng.choice([-1, 0, 1], p=[0.1, 0.8, 0.1], size=(64, 64, 3, 3))
    c = study.layer_costs(iid, 3, table_bits=12)
    assert abs(c["zero_order"] / c["n"] - 0.922) < 0.02  # H(0.1, 0.8, 0.1)
    assert c["prev2"] > c["zero_order"] and c["kernel_flag"] > c["zero_order"]  # no context to exploit: tables cost
    assert abs(c["zero_kernels"] - c["zero_kernels_if_iid"]) < 0.02
    dead = iid * (rng.random((64, 64, 1, 1)) < 0.5)  # half the kernels all zero: the flag pays
    d = study.layer_costs(dead, 3, table_bits=12)
    assert d["kernel_flag"] < 0.97 * d["zero_order"] and d["prev2"] < d["zero_order"]
    assert d["prev_ideal"] <= d["prev2"]


def test_table1_seed_summary(tmp_path, capsys):
    """recipes/table1_seeds.py: drop vs the same seed's float, else vs the mean float; target check."""
    mod = load_recipe("table1_seeds")

    def write(name, seed, scheme, acc, bpw=None, target=None):
        x = {"accuracy": acc, "tans_bits_per_weight_body": bpw, "tans_with_tables_bits_per_weight_body": bpw,
             "mbit_bytes": 100}
        p = tmp_path / name
        p.write_text(json.dumps({"args": {"seed": seed, "target_bpw": target}, "schemes": {scheme: x}}))
        return str(p)

    files = [write("f0.json", 0, "float", 0.80), write("f1.json", 1, "float", 0.78),
             write("m0.json", 0, "mixed-entropy", 0.795, 0.70, 0.82),   # -0.5 vs own float: meets
             write("m1.json", 1, "mixed-entropy", 0.765, 0.55, 0.60),   # -1.5 vs own float: misses
             write("m2.json", 2, "mixed-entropy", 0.786, 0.58, 0.60)]   # no seed-2 float: vs mean 79 %
    out = tmp_path / "s.json"
    assert mod.main(files + ["-o", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["float_mean"] == pytest.approx(79.0) and s["float_spread"] == pytest.approx(2.0)
    r = {x["seed"]: x for x in s["runs"]}
    assert r[0]["drop_vs_own_seed_float"] == pytest.approx(-0.5) and r[0]["meets_target"] and not r[0]["meets_goal"]
    assert r[1]["drop_vs_own_seed_float"] == pytest.approx(-1.5) and not r[1]["meets_target"]
    assert r[2]["drop_vs_own_seed_float"] is None and r[2]["drop_vs_mean_float"] == pytest.approx(-0.4)
    assert r[2]["meets_goal"]
    g = {x["target_bpw"]: x for x in s["groups"]}
    assert g[0.82]["n"] == 1 and g[0.82]["sd_drop"] is None and g[0.82]["meets_target"] == 1
    assert g[0.6]["seeds"] == [1, 2] and g[0.6]["mean_drop"] == pytest.approx((-1.5 - 0.4) / 2, abs=0.01)
    assert g[0.6]["worst_drop"] == pytest.approx(-1.5) and g[0.6]["meets_goal"] == 1 and g[0.6]["max_bpw"] == 0.58
    printed = capsys.readouterr().out
    assert "| m1.json | 1 |" in printed and "| mixed-entropy | 0.6 | 1,2 |" in printed
    with pytest.raises(SystemExit, match="not a resnet_table1 result"):
        mod.main([str(out)])
