import json
import os

import pytest
import torch

from megabit.data import load_cifar10
from megabit.train.classifier import TrainConfig, load_classifier, train_classifier
from tests.conftest import tiny_cfg

FAST = dict(compile=False, bf16=True, batch_size=16, tta=False, threads=1)


def test_two_phase_training_writes_run_dir_and_resumes(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    cfg = TrainConfig(epochs_bn=1, epochs_bsn=1, **FAST)
    out = tmp_path / "run"
    res = train_classifier(cfg, train, test, out, model_cfg=tiny_cfg(), progress=False)
    assert res["epochs"] == 2 and 0 <= res["accuracy"] <= 1
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["phase"] for l in lines] == ["bn", "bsn"]
    assert "occupancy" in lines[0]["quant"]["blocks.0"]
    m = load_classifier(out / "model.pt")
    assert m.cfg.norm == "bsn"
    # resume: a longer schedule continues from the checkpoint instead of starting over
    cfg2 = TrainConfig(epochs_bn=1, epochs_bsn=2, **FAST)
    train_classifier(cfg2, train, test, out, resume=True, model_cfg=tiny_cfg(), progress=False)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]


def test_float_and_bn_only_ablations(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    r = train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, quantize=False, **FAST), train, test, tmp_path / "f",
                         model_cfg=tiny_cfg(), progress=False)
    assert r["epochs"] == 2 and load_classifier(tmp_path / "f" / "model.pt").cfg.quantize is False
    r = train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, norm="bn-only", **FAST), train, test, tmp_path / "b",
                         model_cfg=tiny_cfg(), progress=False)
    assert load_classifier(tmp_path / "b" / "model.pt").cfg.norm == "bn"


def _ddp_worker(rank, world, store, root, out):
    import torch.distributed as dist

    # a file store, not a TCP port: no race for a free port between picking it and binding it
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    train, test = load_cifar10(root, "train"), load_cifar10(root, "test")
    train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, **FAST), train, test, out, model_cfg=tiny_cfg(), progress=False)
    dist.destroy_process_group()


def test_ddp_two_gloo_processes(tmp_path, cifar_root):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(cifar_root), str(out)), nprocs=2, join=True)
    assert (out / "model.pt").exists()
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["epoch"] == 1


def test_distillation_from_a_float_teacher(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, quantize=False, **FAST), train, test, tmp_path / "t",
                     model_cfg=tiny_cfg(), progress=False)
    teacher = str(tmp_path / "t" / "model.pt")
    runs = {}
    for name, extra in {"plain": {}, "kd": {"teacher": teacher, "kd_alpha": 0.9, "kd_temperature": 2.0}}.items():
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, warmup_bsn=0.0, **FAST, **extra), train, test,
                         tmp_path / name, model_cfg=tiny_cfg(), progress=False)
        runs[name] = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    # same seed, same batches: only the distillation term differs, so the training losses differ
    assert runs["plain"][0]["train_loss"] != runs["kd"][0]["train_loss"]
    saved = json.loads((tmp_path / "kd" / "config.json").read_text())["train"]
    assert saved["teacher"] == teacher and saved["warmup_bsn"] == 0.0
    with pytest.raises(ValueError, match="kd_alpha"):
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, teacher=teacher, kd_alpha=1.5, **FAST), train, test,
                         tmp_path / "bad", model_cfg=tiny_cfg(), progress=False)


def test_one_cycle_without_warmup_starts_at_full_lr():
    from megabit.train.classifier import _one_cycle

    assert _one_cycle(0, 100, 0.0) == 1.0 and _one_cycle(50, 100, 0.0) == 0.5
    assert _one_cycle(0, 100, 0.1) == 0.1


def test_device_is_a_config_field_and_checked(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    res = train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, device="cpu", **FAST), train, test, tmp_path / "cpu",
                           model_cfg=tiny_cfg(), progress=False)
    assert 0 <= res["accuracy"] <= 1
    assert json.loads((tmp_path / "cpu" / "config.json").read_text())["train"]["device"] == "cpu"
    with pytest.raises(ValueError, match="device"):
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, device="tpu", **FAST), train, test, tmp_path / "bad",
                         model_cfg=tiny_cfg(), progress=False)


def test_finetune_from_a_packed_mbit_starts_from_its_exact_codes(tmp_path, cifar_root):
    from megabit.export import IntegerNQE
    from megabit.fmt.mbit import write_mbit
    from megabit.train.classifier import evaluate, fit_head_temperature, init_for_finetune
    from tests.conftest import make_bsn_model

    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    src = make_bsn_model(seed=3)
    mb = tmp_path / "m.mbit"
    write_mbit(IntegerNQE.from_model(src), mb)
    start = init_for_finetune(mb)
    # latents rebuilt at bin centres on a Kaiming-sized scale; the codes are the file's, bit for bit
    for (_, q0, w0), (_, q1, w1) in zip(src.quantizers(), start.quantizers()):
        assert torch.equal(q0.codes(w0), q1.codes(w1))
        assert float(q1.step) != 1.0 and all(q.spec.momentum == 0.0 for _, q, _ in start.quantizers())
    x = test.x
    assert torch.equal(src.decision_logits(x), start.decision_logits(x))
    # the temperature fit lowers the training cross-entropy and keeps the integer bias
    b_int = start.head.int_bias().clone()
    ce = lambda m: float(torch.nn.functional.cross_entropy(m(train.x).detach().float(), train.y))  # noqa: E731
    before = ce(start.eval())
    fit_head_temperature(start, train.x, train.y)
    assert ce(start) <= before + 1e-6 and torch.equal(start.head.int_bias(), b_int)
    assert torch.equal(src.decision_logits(x), start.decision_logits(x))
    # one BSN epoch from the file: notes record the start's accuracy; a BN phase is refused
    res = train_classifier(TrainConfig(epochs_bn=0, epochs_bsn=1, warmup_bsn=0.0, init=str(mb), **FAST), train, test,
                           tmp_path / "ft", progress=False)
    assert res["notes"]["init_accuracy"] == evaluate(src, test)["accuracy"]
    assert res["epochs"] == 1 and (tmp_path / "ft" / "model.pt").exists()
    with pytest.raises(ValueError, match="epochs-bn 0"):
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, init=str(mb), **FAST), train, test, tmp_path / "bad",
                         progress=False)


def test_qat_starts_from_a_float_classifier(tmp_path, cifar_root):
    from megabit.train.classifier import evaluate, quantize_float_start

    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    fl = tmp_path / "float"
    train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, quantize=False, **FAST), train, test, fl,
                     model_cfg=tiny_cfg(), progress=False)
    src = load_classifier(fl / "model.pt")
    q = quantize_float_start(src, train.x, train.y)
    assert q.cfg.quantize and q.cfg.norm == "bn" and q.cfg.layers == src.cfg.layers
    for b0, b1 in zip(src.blocks, q.blocks):
        assert torch.equal(b0.weight, b1.weight)  # latents are the float weights
        c = (b0.norm.weight / b1.norm.weight).detach()  # one clip per layer divides gamma and beta alike
        assert torch.allclose(c, c[0].expand_as(c)) and float(c[0]) > 0
        assert torch.allclose(b0.norm.bias.detach() / c, b1.norm.bias.detach(), atol=1e-6)
        assert torch.isfinite(b1.norm.running_var).all() and not torch.equal(b0.norm.running_var, b1.norm.running_var)
    assert torch.equal(q.head.bias, src.head.bias) and all(bool(qq.initialized) for _, qq, _ in q.quantizers())
    assert torch.isfinite(q(test.x)).all()
    with pytest.raises(ValueError, match="float"):
        quantize_float_start(q, train.x, train.y)
    # full QAT from the float run through the trainer: a BN phase is allowed, the start is recorded
    res = train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, init=str(fl / "model.pt"), **FAST), train, test,
                           tmp_path / "qat", progress=False)
    assert res["notes"]["init_accuracy"] == evaluate(q, test)["accuracy"] and res["epochs"] == 2
    assert load_classifier(tmp_path / "qat" / "model.pt").cfg.norm == "bsn"


def test_float_start_loads_into_a_layer_table_with_other_pools(tmp_path, cifar_root):
    from megabit.models.nqe import NQE, LayerSpec, get_preset
    from megabit.train.classifier import init_for_finetune, save_classifier

    train = load_cifar10(cifar_root, "train")
    torch.manual_seed(0)
    src = NQE(tiny_cfg(quantize=False))
    save_classifier(src, tmp_path / "f.pt")
    moved = tiny_cfg().with_(name="moved", layers=(LayerSpec(8, levels=5), LayerSpec(16, levels=3, groups=2, pool=True),
                                                   LayerSpec(16, levels=3, groups=2, pool=True)))
    # levels differ: a float start has no grid yet, so it takes the new one (session 41; a quantized start is refused,
    # tests/models/test_layer_grid.py)
    regrid = init_for_finetune(tmp_path / "f.pt", calib=(train.x, train.y), arch=moved)
    assert [l.levels for l in regrid.cfg.layers] == [5, 3, 3] and regrid.blocks[2].quant.spec.levels == 3
    moved = moved.with_(layers=(LayerSpec(8, levels=5), LayerSpec(16, levels=3, groups=2, pool=True),
                                LayerSpec(16, levels=2, groups=2, pool=True)))
    q = init_for_finetune(tmp_path / "f.pt", calib=(train.x, train.y), arch=moved)
    assert q.cfg.layers == moved.layers and q.cfg.quantize and q.cfg.name == "moved"
    for b0, b1 in zip(src.blocks, q.blocks):
        assert torch.equal(b0.weight, b1.weight)
    assert q(train.x[:4]).shape == (4, 10)
    wider = moved.with_(layers=(LayerSpec(12, levels=5),) + moved.layers[1:])
    with pytest.raises(ValueError, match="do not fit"):
        init_for_finetune(tmp_path / "f.pt", calib=(train.x, train.y), arch=wider)
    # the shipped pair: nqe-1mbit-hr has nqe-1mbit's weights and budget, its first pool one layer later
    a, b = get_preset("nqe-1mbit"), get_preset("nqe-1mbit-hr")
    assert [(l.out, l.levels, l.groups, l.kernel) for l in a.layers] == [(l.out, l.levels, l.groups, l.kernel) for l in b.layers]
    assert [l.pool for l in a.layers] != [l.pool for l in b.layers] and sum(l.pool for l in b.layers) == 3


def test_clip_for_codes_fits_better_than_the_extremes():
    from megabit.quant.act import hwmsb_codes
    from megabit.train.classifier import _clip_for_codes

    y = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    r = torch.relu(y)

    def err(c):
        m = hwmsb_codes(r / c)
        A = torch.stack([m, torch.ones_like(m)], 1)
        return float(((A @ torch.linalg.lstsq(A, r.unsqueeze(1)).solution).squeeze(1) - r).pow(2).mean())

    c = _clip_for_codes(y, 2, "floor")
    assert 0.5 < c < 4.0
    assert err(c) < err(float(r.max())) and err(c) < err(float(r[r > 0].median()) * 0.5)
    assert _clip_for_codes(-y.abs(), 2, "floor") == 1.0  # nothing positive: a neutral clip


def test_recipe_from_float_runs_both_stages_and_resumes(tmp_path, cifar_root):
    import subprocess
    import sys

    cmd = [sys.executable, "recipes/nqe_1mbit_from_float.py", "--data-root", str(cifar_root), "--out", str(tmp_path / "r"),
           "--preset", "nqe-tiny", "--float-epochs", "1", "--epochs-bn", "1", "--epochs-bsn", "1", "--batch-size", "16",
           "--no-compile", "--device", "cpu", "--kd-alpha", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert load_classifier(tmp_path / "r" / "float" / "model.pt").cfg.quantize is False
    q = tmp_path / "r" / "qat"
    assert load_classifier(q / "model.pt").cfg.norm == "bsn"
    cfg = json.loads((q / "config.json").read_text())["train"]
    assert cfg["init"] == str(tmp_path / "r" / "float" / "model.pt") and cfg["warmup_bsn"] == 0.0
    assert cfg["teacher"] == cfg["init"] and cfg["kd_alpha"] == 0.5  # --kd-alpha: the float model is the teacher
    # --resume with both stages done: no epoch is trained again
    p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len((q / "metrics.jsonl").read_text().splitlines()) == 2


def test_recipe_from_float_float_preset_trains_the_twin_in_its_own_layer_table(tmp_path, cifar_root):
    """--float-preset: stage 1 in nqe-1mbit's layers, stage 2 in nqe-1mbit-hr's (same weight shapes, pool moved)."""
    import subprocess
    import sys

    cmd = [sys.executable, "recipes/nqe_1mbit_from_float.py", "--data-root", str(cifar_root), "--out", str(tmp_path / "r"),
           "--float-preset", "nqe-1mbit", "--preset", "nqe-1mbit-hr", "--float-epochs", "1", "--epochs-bn", "1",
           "--epochs-bsn", "0", "--batch-size", "16", "--no-compile", "--device", "cpu", "--limit-train", "32",
           "--limit-test", "16"]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    twin = load_classifier(tmp_path / "r" / "float" / "model.pt")
    assert twin.cfg.quantize is False and twin.cfg.name == "nqe-1mbit"
    q = load_classifier(tmp_path / "r" / "qat" / "model.pt")
    assert q.cfg.quantize is True and q.cfg.name == "nqe-1mbit-hr"
    assert [l.pool for l in twin.cfg.layers] != [l.pool for l in q.cfg.layers]
    bad = subprocess.run(cmd[:4] + ["--out", str(tmp_path / "bad"), "--float-preset", "bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown preset 'bogus'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_eval_every_skips_test_epochs_but_not_phase_ends(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    out = tmp_path / "run"
    res = train_classifier(TrainConfig(epochs_bn=3, epochs_bsn=2, eval_every=2, **FAST), train, test, out,
                           model_cfg=tiny_cfg(), progress=False)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [l["epoch"] for l in lines if l["test_acc"] is not None]
    assert evaluated == [2, 3, 4, 5]  # every 2nd epoch, plus the BN phase's last (3) and the run's last (5)
    assert res["accuracy"] == lines[-1]["test_acc"]
    with pytest.raises(ValueError, match="eval_every"):
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, eval_every=0, **FAST), train, test, tmp_path / "bad",
                         model_cfg=tiny_cfg(), progress=False)


def test_fitted_bsn_conversion_in_training(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    out = tmp_path / "run"
    res = train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, bsn_init="fit", bsn_calib_images=32, **FAST),
                           train, test, out, model_cfg=tiny_cfg(), progress=False)
    fit = res["notes"]["bsn_fit"]
    assert len(fit) == len(tiny_cfg().layers) and all("code_mse" in r for r in fit)
    assert load_classifier(out / "model.pt").cfg.norm == "bsn"
    bn_end = load_classifier(out / "bn_end.pt")  # the phase-1 end, for later conversion studies
    assert bn_end.cfg.norm == "bn" and bn_end.cfg.quantize
    with pytest.raises(ValueError, match="bsn_init"):
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, bsn_init="median", **FAST), train, test,
                         tmp_path / "bad", model_cfg=tiny_cfg(), progress=False)


def test_per_channel_bsn_with_a_mantissa_trains_and_resumes(tmp_path, cifar_root):
    from megabit.export import IntegerNQE

    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    out = tmp_path / "run"
    bsn = dict(bsn_granularity="channel", bsn_mantissa_bits=1, bsn_offset_bits=13)
    train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, bsn_init="fit", bsn_calib_images=32, **bsn, **FAST),
                     train, test, out, model_cfg=tiny_cfg(), progress=False)
    m = load_classifier(out / "model.pt")
    assert (m.cfg.bsn_granularity, m.cfg.bsn_mantissa_bits, m.cfg.offset_bits) == ("channel", 1, 13)
    assert m.blocks[0].norm.shift.shape == (tiny_cfg().layers[0].out,)
    x = test.x[:16]
    assert torch.equal(IntegerNQE.from_model(m)(x), torch.round(m(x) / m.head.log_alpha.exp()).long())
    # resume inside the BSN phase rebuilds the per-channel BSN before loading the checkpoint
    res = train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=2, bsn_init="fit", bsn_calib_images=32, **bsn, **FAST),
                           train, test, out, resume=True, model_cfg=tiny_cfg(), progress=False)
    assert res["epochs"] == 3
    with pytest.raises(ValueError, match="bsn_granularity"):
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=1, bsn_granularity="pixel", **FAST), train, test,
                         tmp_path / "bad", model_cfg=tiny_cfg(), progress=False)
