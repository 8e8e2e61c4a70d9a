import json

import pytest
import torch
import torch.nn.functional as F

from megabit.data import load_cifar10
from megabit.models.nqe import NQE
from megabit.train.classifier import TrainConfig, load_classifier, reestimate_bn, train_classifier
from tests.conftest import tiny_cfg

FAST = dict(compile=False, bf16=True, batch_size=16, tta=False, threads=1)


def test_reestimate_bn_is_the_batch_statistics_and_keeps_the_steps():
    torch.manual_seed(0)
    m = NQE(tiny_cfg())
    x = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    m.train()
    with torch.no_grad():
        m(x[:8])  # sets the quantizer steps; running statistics now from 8 images at momentum 0.1
    m.eval()
    steps = [q.step.clone() for _, q, _ in m.quantizers()]
    assert reestimate_bn(m, x, batch_size=24) == 3
    assert not m.training
    assert all(torch.equal(s, q.step) for s, (_, q, _) in zip(steps, m.quantizers()))
    b = m.blocks[0]
    with torch.no_grad():
        acc = F.conv2d(m.prepare_input(x), b.weight_codes(), None, 1, 1, 1, b.spec.groups)
    torch.testing.assert_close(b.norm.running_mean, acc.mean((0, 2, 3)), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(b.norm.running_var, acc.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-2)
    assert b.norm.momentum == 0.1  # restored
    # cumulative over batches: two batches of 12 average their statistics with equal weight
    reestimate_bn(m, x, batch_size=12)
    half = [acc[:12].mean((0, 2, 3)), acc[12:].mean((0, 2, 3))]
    torch.testing.assert_close(b.norm.running_mean, (half[0] + half[1]) / 2, rtol=1e-5, atol=1e-3)


def test_ema_of_the_bn_phase_is_saved_evaluated_and_resumed(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    out = tmp_path / "run"
    cfg = TrainConfig(epochs_bn=1, epochs_bsn=0, ema_decay=0.9, ema_bn_images=64, **FAST)
    res = train_classifier(cfg, train, test, out, model_cfg=tiny_cfg(), progress=False)
    assert 0 <= res["notes"]["ema_accuracy"] <= 1 and res["notes"]["ema_decay"] == 0.9
    live, avg = load_classifier(out / "model.pt"), load_classifier(out / "ema_bn_end.pt")
    assert avg.cfg == live.cfg
    assert not torch.equal(avg.blocks[0].weight, live.blocks[0].weight)  # an average, not the last weights
    for (_, qa, _), (_, ql, _) in zip(avg.quantizers(), live.quantizers()):  # the live model's steps
        assert torch.equal(qa.step, ql.step)
    steps = len(train) // 16
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert int(ck["ema"]["n_averaged"]) == steps
    # resume for a second BN epoch: the average continues from the checkpoint's
    cfg2 = TrainConfig(epochs_bn=2, epochs_bsn=0, ema_decay=0.9, ema_bn_images=64, **FAST)
    train_classifier(cfg2, train, test, out, resume=True, model_cfg=tiny_cfg(), progress=False)
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert int(ck["ema"]["n_averaged"]) == 2 * steps
    # then a BSN phase: the average is finished at the BN phase's end and not carried on
    cfg3 = TrainConfig(epochs_bn=2, epochs_bsn=1, ema_decay=0.9, ema_bn_images=64, **FAST)
    res = train_classifier(cfg3, train, test, out, resume=True, model_cfg=tiny_cfg(), progress=False)
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["ema"] is None and "ema_accuracy" in res["notes"]
    assert [json.loads(l)["phase"] for l in (out / "metrics.jsonl").read_text().splitlines()] == ["bn", "bn", "bsn"]
    assert load_classifier(out / "model.pt").cfg.norm == "bsn" and load_classifier(out / "ema_bn_end.pt").cfg.norm == "bn"
    with pytest.raises(ValueError, match="ema_decay"):
        train_classifier(TrainConfig(epochs_bn=1, epochs_bsn=0, ema_decay=1.0, **FAST), train, test, tmp_path / "bad",
                         model_cfg=tiny_cfg(), progress=False)


def test_conversion_draw_seed_reaches_the_fit(tmp_path, cifar_root):
    """TrainConfig.bsn_calib_seed picks the positions the fitted conversion sees (16 per channel: draws differ)."""
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    offsets = []
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        cfg = TrainConfig(epochs_bn=1, epochs_bsn=1, lr_bsn=0.0, bsn_calib_images=32, bsn_calib_samples=16,
                          bsn_calib_seed=seed, **FAST)
        train_classifier(cfg, train, test, out, model_cfg=tiny_cfg(), progress=False)
        assert json.loads((out / "config.json").read_text())["train"]["bsn_calib_seed"] == seed
        m = load_classifier(out / "model.pt")
        offsets.append(torch.cat([b.norm.offset.flatten().float() for b in m.blocks]))
    assert not torch.equal(offsets[0], offsets[1])
