"""Where the QAT start loses: a float NQE quantized block by block (a diagnostic, evaluation only).

    python recipes/nqe_weight_quant_sensitivity.py runs/s40pilot/float/model.pt \
        --data-root ../shared/data/cifar10-jpeg-q75 --limit-test 5000 --json results/nqe_weight_quant_sensitivity_s40.json

The float model becomes the QAT start (``quantize_float_start``: 2-bit activations, weight codes, BatchNorm
re-estimated through them, head temperature fitted; what ``train-classifier --init FLOAT`` starts from). Then, for each
arm, some conv blocks run on their latent float weights (``set_float_weights`` per block), BatchNorm is re-estimated
on ``--calib`` training images and the test set is scored (flip TTA): no block's weights quantized (activations only),
all, each block alone, all but each block. The head's weights are quantized in every arm.

[I] Accuracy right after quantization, before any training: it says where the start's drop sits, not what QAT
recovers. ``--first-levels 5,15,31`` repeats it with the first block's weights on other odd grids (same float weights).
"""
import argparse
import json
import sys
from dataclasses import replace

import torch

from megabit.data import load_cifar10
from megabit.data.cifar import DataError
from megabit.models.nqe import NQE
from megabit.train.classifier import evaluate, load_classifier, quantize_float_start, reestimate_bn
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("model", help="a float NQE model.pt (a --float run)")
ap.add_argument("--data-root", required=True)
ap.add_argument("--calib", type=int, default=5000, help="training images for the start's calibration and BatchNorm")
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--first-levels", default=None,
                help="comma-separated weight levels (odd) for the first conv block, each a start of its own "
                     "(default: the model's own layer table)")
ap.add_argument("--first-step-rule", choices=("heq", "absmax"), default=None,
                help="the first block's step rule (default: the model's, heq); absmax: s = max|w| / m, no clipping")
ap.add_argument("--arms", default=None, help="comma-separated arm names to score (default: all)")
ap.add_argument("--json", default=None)
a = ap.parse_args()
try:
    first = [int(t) for t in a.first_levels.split(",")] if a.first_levels else [None]
except ValueError:
    ap.error(f"--first-levels: expected comma-separated integers, got {a.first_levels!r}")
if any(v is not None and (v < 3 or v % 2 == 0) for v in first):
    ap.error("--first-levels: odd level counts >= 3 (zero-point grids)")
try:
    train = load_cifar10(a.data_root, "train", a.calib)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    src = load_classifier(a.model)
except (DataError, ValueError) as e:
    sys.exit(f"nqe_weight_quant_sensitivity: error: {e}")
if src.cfg.quantize:
    sys.exit(f"nqe_weight_quant_sensitivity: error: {a.model} is already quantized (expects a float model)")
float_acc = evaluate(src, test)["accuracy"]
res = {"model": a.model, "float_accuracy": float_acc, "test_images": len(test), "calib_images": len(train),
       "note": "CIFAR-10 JPEG-q75 copy; flip TTA; blocks listed are the ones whose weights are quantized",
       "starts": []}
for lv in first:
    start_src = src
    if lv is not None:  # the same float weights in a layer table whose first block has lv levels
        start_src = NQE(src.cfg.with_(layers=(replace(src.cfg.layers[0], levels=lv),) + src.cfg.layers[1:]))
        start_src.load_state_dict(src.state_dict())
    model = quantize_float_start(start_src.eval(), train.x, train.y)  # what train-classifier --init FLOAT starts from
    if a.first_step_rule:  # the first block's grid by another rule, steps set again on the same float weights
        q0 = model.blocks[0].quant
        q0.spec = replace(q0.spec, step_rule=a.first_step_rule)
        q0.initialized.fill_(False)
        with torch.no_grad():
            q0.codes(model.blocks[0].weight)  # an unset step is set from these weights on first use
    n = len(model.blocks)
    arms = {"none": set(), "all": set(range(n))}
    arms |= {f"only {i}": {i} for i in range(n)}
    arms |= {f"all but {i}": set(range(n)) - {i} for i in range(n)}
    if a.arms:
        unknown = set(a.arms.split(",")) - set(arms)
        if unknown:
            sys.exit(f"nqe_weight_quant_sensitivity: error: unknown arms {sorted(unknown)}; known: {list(arms)}")
        arms = {k: v for k, v in arms.items() if k in a.arms.split(",")}
    blocks = [{"levels": l.levels, "weights": b.weight.numel()} for l, b in zip(model.cfg.layers, model.blocks)]
    start = {"first_step_rule": model.blocks[0].quant.spec.step_rule, "blocks": blocks, "arms": {}}
    for name, quantized in arms.items():
        for i, blk in enumerate(model.blocks):
            blk.float_weights = i not in quantized
        reestimate_bn(model, train.x)
        start["arms"][name] = evaluate(model, test)["accuracy"]
        print(f"first block {model.cfg.layers[0].levels} levels, {name:>10}: {start['arms'][name]:.4f}", flush=True)
    res["starts"].append(start)
    if a.json:
        atomic_write_text(a.json, json.dumps(res, indent=2) + "\n")
