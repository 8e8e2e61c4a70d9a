"""Recipe: compare BN -> BSN conversions on a trained BN-phase model (no training).

    python recipes/nqe_bsn_conversion.py RUN/model.pt --data-root ../shared/data/cifar10-jpeg-q75 \
        --json results/nqe_bsn_conversion.json

RUN/model.pt is a quantized model still in BatchNorm mode: the ``bn_end.pt`` that
`megabit train-classifier` keeps at the end of phase 1, or the model.pt of a run with `--epochs-bsn 0`. For each conversion (``quantile``: the paper's reading; ``fit-mse`` and
``fit-mismatch``: [I] shift and offsets fitted layer by layer to the BN network's activation codes
on the first ``--calib`` training images) it reports the test accuracy right after conversion
(flip TTA), the shifts, and the per-layer agreement of activation codes with the BN network on
the first 500 test images.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from megabit.data import load_cifar10
from megabit.data.cifar import DataError
from megabit.train.classifier import evaluate, load_classifier
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("model", help="a quantized BN-mode classifier model.pt")
ap.add_argument("--data-root", required=True)
ap.add_argument("--calib", type=int, default=1000, help="calibration images for the fitted conversions")
ap.add_argument("--methods", default="quantile,fit-mse,fit-mismatch")
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--json", default=None, help="write the results here")
a = ap.parse_args()
try:
    train = load_cifar10(a.data_root, "train", a.calib)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    base = load_classifier(a.model)
except (DataError, OSError, ValueError, KeyError) as e:
    sys.exit(f"nqe_bsn_conversion: error: {e}")
if base.cfg.norm != "bn" or not base.cfg.quantize:
    sys.exit(f"nqe_bsn_conversion: error: {a.model} is not a quantized BatchNorm-mode model")
base.eval()


@torch.no_grad()
def agreement(m, n: int = 500) -> list[float]:
    xb, xm = base.prepare_input(test.x[:n]), m.prepare_input(test.x[:n])
    out = []
    for bb, mb in zip(base.blocks, m.blocks):
        xb, xm = bb(xb), mb(xm)
        out.append(round(float((xb == xm).float().mean()), 4))
    return out


res = {"model": a.model, "calib_images": a.calib, "bn_accuracy": evaluate(base, test)["accuracy"],
       "test_images": len(test.y), "data": "CIFAR-10 JPEG-q75 copy, flip TTA", "methods": {}}
print(f"BN mode: {res['bn_accuracy']:.4f}", flush=True)
for meth in a.methods.split(","):
    m = copy.deepcopy(base)
    t0 = time.time()
    if meth == "quantile":
        m.convert_to_bsn()
    elif meth in ("fit-mse", "fit-mismatch"):
        m.convert_to_bsn(train.x[: a.calib], loss=meth.split("-")[1])
    else:
        sys.exit(f"nqe_bsn_conversion: error: unknown method {meth!r}")
    conv_s = time.time() - t0
    m.eval()
    r = {"accuracy": evaluate(m, test)["accuracy"], "convert_s": round(conv_s, 1),
         "shifts": [b.norm.shift.tolist() for b in m.blocks], "code_agreement": agreement(m),
         "fit": getattr(m, "bsn_fit", [])}
    res["methods"][meth] = r
    print(f"{meth}: {r['accuracy']:.4f} shifts {r['shifts']} agreement {r['code_agreement']} ({conv_s:.0f}s)", flush=True)
if a.json:
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.json, json.dumps(res, indent=2))
