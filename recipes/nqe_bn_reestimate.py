"""Recipe: re-estimate the BatchNorm statistics of QAT'd BN-phase models, then convert (no training).

    python recipes/nqe_bn_reestimate.py runs/s35/qat/model.pt runs/s36/qat/model.pt runs/s37/qat/model.pt \
        --data-root ../shared/data/cifar10-jpeg-q75 --images 10000 --json results/nqe_bn_reestimate_s38.json

For each BN-phase model (``train-classifier``'s ``bn_end.pt`` / ``model.pt`` of a ``--epochs-bsn 0`` run): the
flip-TTA test accuracy as trained, then after :func:`megabit.train.classifier.reestimate_bn` on the first
``--images`` training images (``--augment``: random crop + flip, as the training batches), then (``--convert``) the
fitted per-channel BN->BSN conversion of the model as trained and of the re-estimated one (4,096 positions per channel,
draw 0, on the first ``--calib`` images of the class-balanced ``max(--images, --calib)`` slice: with ``--images 10000``
not the same 1,000 images as ``nqe_bsn_scale.py --calib 1000``), the re-estimated one saved to ``--save-dir`` for
``megabit pack`` / ``eval-classifier --integer``.
[I] Re-estimating BN after QAT is not in the NQE paper (Nagel et al. 2022 do it against weight oscillation).
"""
import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

from megabit.data import load_cifar10
from megabit.data.cifar import DataError
from megabit.train.classifier import evaluate, load_classifier, reestimate_bn, save_classifier
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("models", nargs="+", help="quantized BatchNorm-mode classifiers (model.pt)")
ap.add_argument("--data-root", required=True)
ap.add_argument("--images", type=int, default=50000, help="training images for the statistics")
ap.add_argument("--batch-size", type=int, default=250)
ap.add_argument("--augment", action="store_true", help="random crop + flip, as the training batches")
ap.add_argument("--convert", default="", help="comma list of BSN arms after re-estimation: channel:B or layer:B")
ap.add_argument("--calib", type=int, default=1000, help="training images for the conversion's fit")
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--save-dir", default=None)
ap.add_argument("--json", default=None)
a = ap.parse_args()

try:
    if a.images < 1 or a.batch_size < 2 or a.calib < 1:
        raise ValueError("--images and --calib must be >= 1, --batch-size >= 2")
    arms = {}
    for s in (v for v in a.convert.split(",") if v):
        gran, _, bits = s.partition(":")
        if gran not in ("layer", "channel") or not bits.isdigit() or not 0 <= int(bits) <= 3:
            raise ValueError(f"--convert {s!r}: expected channel:B or layer:B (B 0..3)")
        arms[s] = {"bsn_granularity": gran, "bsn_mantissa_bits": int(bits)}
    train = load_cifar10(a.data_root, "train", max(a.images, a.calib))
    test = load_cifar10(a.data_root, "test", a.limit_test)
    models = {p: load_classifier(p) for p in a.models}
except (DataError, OSError, ValueError, KeyError) as e:
    sys.exit(f"nqe_bn_reestimate: error: {e}")
for p, m in models.items():
    if m.cfg.norm != "bn" or not m.cfg.quantize:
        sys.exit(f"nqe_bn_reestimate: error: {p} is not a quantized BatchNorm-mode model")

res = {"command": "python " + " ".join(sys.argv),
       "machine": {"platform": platform.platform(), "torch": torch.__version__, "cpu": platform.processor() or "x86_64",
                   "threads": torch.get_num_threads()},
       "images": a.images, "augment": a.augment, "batch_size": a.batch_size, "calib_images": a.calib,
       "test_images": len(test.y), "data": "CIFAR-10 JPEG-q75 copy, full test set unless limited, flip TTA, fake-quant",
       "models": {}}
for p, base in models.items():
    r = {"bn_accuracy": evaluate(base, test)["accuracy"]}
    m = copy.deepcopy(base)
    t0 = time.time()
    reestimate_bn(m, train.x[: a.images], a.batch_size, augment=a.augment)
    r["reestimate_s"] = round(time.time() - t0, 1)
    r["reestimated_accuracy"] = evaluate(m, test)["accuracy"]
    print(f"{p}: BN {r['bn_accuracy']:.4f} -> re-estimated {r['reestimated_accuracy']:.4f} ({r['reestimate_s']} s)",
          flush=True)
    for arm, fields in arms.items():
        for name, src in (("as_trained", base), ("reestimated", m)):
            c = copy.deepcopy(src)
            c.convert_to_bsn(train.x[: a.calib], **fields)
            r[f"{arm}/{name}"] = evaluate(c, test)["accuracy"]
            print(f"  {arm} from {name}: {r[f'{arm}/{name}']:.4f}", flush=True)
            if a.save_dir and name == "reestimated":
                out = Path(a.save_dir) / f"{Path(p).parent.parent.name}-{Path(p).stem}-{arm.replace(':', '-')}.pt"
                out.parent.mkdir(parents=True, exist_ok=True)
                save_classifier(c, out)
                r[f"{arm}/saved"] = str(out)
    res["models"][p] = r
    if a.json:  # after every model, so a long run keeps what it measured
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.json, json.dumps(res, indent=2))
