"""Two-stage QAT (TrainConfig.epochs_act): quantized activations on float weights, then full QAT."""
import json

import pytest
import torch

from megabit.data import load_cifar10
from megabit.models.nqe import NQE
from megabit.train.classifier import TrainConfig, load_classifier, set_float_weights, train_classifier
from tests.conftest import tiny_cfg

FAST = dict(compile=False, bf16=False, batch_size=16, tta=False, threads=1)


def _accumulators(model: NQE, x: torch.Tensor) -> list[torch.Tensor]:
    """Every conv block's norm input (the accumulators) on x."""
    seen = []
    hooks = [b.norm.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach())) for b in model.blocks]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_float_weights_switch_runs_the_latent_weights_and_back():
    torch.manual_seed(0)
    model = NQE(tiny_cfg())
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    q = _accumulators(model, x)
    assert all(torch.equal(a, a.round()) for a in q)  # integer codes on integer inputs: integer sums
    set_float_weights(model, True)
    f = _accumulators(model, x)
    assert not torch.equal(f[0], f[0].round())  # the latent float weights
    set_float_weights(model, False)
    assert all(torch.equal(a, b) for a, b in zip(q, _accumulators(model, x)))


def test_act_stage_precedes_the_bn_phase_and_resumes(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    out = tmp_path / "run"
    cfg = TrainConfig(epochs_act=1, epochs_bn=1, epochs_bsn=0, stage_bn_images=64, **FAST)
    res = train_classifier(cfg, train, test, out, model_cfg=tiny_cfg(), progress=False)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["phase"] for l in lines] == ["act", "bn"] and res["epochs"] == 2
    assert 0 <= res["notes"]["act_stage_start"] <= 1 and 0 <= res["notes"]["bn_stage_start"] <= 1
    m = load_classifier(out / "model.pt")
    assert all(not b.float_weights for b in m.blocks)  # the saved model runs on its codes
    # resume: one more BN epoch continues after the boundary (no second act stage)
    cfg2 = TrainConfig(epochs_act=1, epochs_bn=2, epochs_bsn=1, stage_bn_images=64, **FAST)
    train_classifier(cfg2, train, test, out, resume=True, model_cfg=tiny_cfg(), progress=False)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(l["epoch"], l["phase"]) for l in lines] == [(1, "act"), (2, "bn"), (3, "bn"), (4, "bsn")]
    assert load_classifier(out / "model.pt").cfg.norm == "bsn"


def test_act_stage_refuses_configs_it_cannot_run(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    for bad, msg in ((dict(epochs_act=1, quantize=False), "quantized"), (dict(epochs_act=1, epochs_bn=0), "epochs_bn"),
                     (dict(epochs_act=-1), "epochs_act")):
        with pytest.raises(ValueError, match=msg):
            train_classifier(TrainConfig(**(dict(epochs_bn=1, epochs_bsn=0) | bad), **FAST), train, test,
                             tmp_path / "bad", model_cfg=tiny_cfg(), progress=False)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
