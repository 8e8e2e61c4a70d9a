"""Ablation at one short, equal budget: the nqe-1mbit architecture in float vs quantized with
BatchNorm throughout vs quantized BN -> BSN (the shipped recipe's phases, shortened).

    python recipes/nqe_ablation.py --data-root ../shared/data/cifar10-jpeg-q75 --out runs/ablation \
        --epochs-bn 6 --epochs-bsn 3

Writes results/nqe_ablation.json. Each variant resumes from its own run directory.
Variant ``kd`` is the quantized BN -> BSN model distilled from the ``float`` variant's model (run
``float`` first; no warm-up in the BSN phase) [I]. ``--device auto`` trains on a GPU when CUDA is
there; on a lent GPU machine the paper's budget (``--epochs-bn 100 --epochs-bsn 120``) is the
intended run (see docs/LOG.md for how a session carries the data there).
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from megabit.data import load_cifar10
from megabit.train.classifier import TrainConfig, train_classifier
from megabit.utils import atomic_write_text, resolve_device

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--epochs-bn", type=int, default=6)
ap.add_argument("--epochs-bsn", type=int, default=3)
ap.add_argument("--variants", default="float,bn-only,bn-bsn")
ap.add_argument("--results", default="results/nqe_ablation.json")
ap.add_argument("--device", default="auto", help="auto (GPU if available, else CPU), cpu, cuda or cuda:N")
ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
ap.add_argument("--limit-train", type=int, default=None)
ap.add_argument("--limit-test", type=int, default=None)
a = ap.parse_args()
train = load_cifar10(a.data_root, "train", a.limit_train)
test = load_cifar10(a.data_root, "test", a.limit_test)
common = dict(epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn, device=a.device, compile=a.compile)
variants = {
    "float": TrainConfig(quantize=False, **common),
    "bn-only": TrainConfig(norm="bn-only", **common),
    "bn-bsn": TrainConfig(**common),
    "kd": TrainConfig(teacher=str(Path(a.out) / "float" / "model.pt"), warmup_bsn=0.0, **common),
}
unknown = set(a.variants.split(",")) - set(variants)
if unknown:
    sys.exit(f"nqe_ablation: error: unknown variants {sorted(unknown)} (choose from {', '.join(variants)})")
dev = resolve_device(a.device)
out = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"},
       "data": train.source, "note": "CIFAR-10 is the JPEG-q75 copy; accuracy with flip TTA on the full 10k test set",
       "budget_epochs": a.epochs_bn + a.epochs_bsn, "variants": {}}
for name in a.variants.split(","):
    t0 = time.time()
    r = train_classifier(variants[name], train, test, Path(a.out) / name, resume=True)
    out["variants"][name] = {"accuracy": r["accuracy"], "train_wall_s": r["train_wall_s"], "epochs": r["epochs"],
                             "notes": r["notes"], "config": variants[name].to_dict()}
    atomic_write_text(a.results, json.dumps(out, indent=2))
    print(name, r["accuracy"], f"{time.time() - t0:.0f}s", flush=True)
