"""Where the QAT start loses: a float NQE quantized block by block (a diagnostic, evaluation only).

    python recipes/nqe_weight_quant_sensitivity.py runs/s40pilot/float/model.pt \
        --data-root ../shared/data/cifar10-jpeg-q75 --limit-test 5000 --json results/nqe_weight_quant_sensitivity_s40.json

The float model becomes the QAT start (``quantize_float_start``: 2-bit activations, weight codes, BatchNorm
re-estimated through them, head temperature fitted; what ``train-classifier --init FLOAT`` starts from). Then, for each
arm, some conv blocks run on their latent float weights (``set_float_weights`` per block), BatchNorm is re-estimated
on ``--calib`` training images and the test set is scored (flip TTA): no block's weights quantized (activations only),
all, each block alone, all but each block. The head's weights are quantized in every arm.

[I] Accuracy right after quantization, before any training: it says where the start's drop sits, not what QAT
recovers.
"""
import argparse
import json
import sys

from megabit.data import load_cifar10
from megabit.data.cifar import DataError
from megabit.train.classifier import evaluate, init_for_finetune, load_classifier, reestimate_bn
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("model", help="a float NQE model.pt (a --float run)")
ap.add_argument("--data-root", required=True)
ap.add_argument("--calib", type=int, default=5000, help="training images for the start's calibration and BatchNorm")
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--json", default=None)
a = ap.parse_args()
try:
    train = load_cifar10(a.data_root, "train", a.calib)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    src = load_classifier(a.model)
except (DataError, ValueError) as e:
    sys.exit(f"nqe_weight_quant_sensitivity: error: {e}")
if src.cfg.quantize:
    sys.exit(f"nqe_weight_quant_sensitivity: error: {a.model} is already quantized (expects a float model)")
float_acc = evaluate(src, test)["accuracy"]
model = init_for_finetune(a.model, 0.0, (train.x, train.y))
n = len(model.blocks)
arms = {"none": set(), "all": set(range(n))}
arms |= {f"only {i}": {i} for i in range(n)}
arms |= {f"all but {i}": set(range(n)) - {i} for i in range(n)}
res = {"model": a.model, "float_accuracy": float_acc, "test_images": len(test), "calib_images": len(train),
       "note": "CIFAR-10 JPEG-q75 copy; flip TTA; blocks listed are the ones whose weights are quantized",
       "blocks": [{"levels": l.levels, "weights": b.weight.numel()} for l, b in zip(model.cfg.layers, model.blocks)],
       "arms": {}}
for name, quantized in arms.items():
    for i, blk in enumerate(model.blocks):
        blk.float_weights = i not in quantized
    reestimate_bn(model, train.x)
    res["arms"][name] = evaluate(model, test)["accuracy"]
    print(f"{name:>10}: {res['arms'][name]:.4f}", flush=True)
if a.json:
    atomic_write_text(a.json, json.dumps(res, indent=2) + "\n")
