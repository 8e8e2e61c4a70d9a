"""Ablation at one short, equal budget: the nqe-1mbit architecture in float vs quantized with
BatchNorm throughout vs quantized BN -> BSN (the shipped recipe's phases, shortened).

    python recipes/nqe_ablation.py --data-root ../shared/data/cifar10-jpeg-q75 --out runs/ablation \
        --epochs-bn 6 --epochs-bsn 3

Writes results/nqe_ablation.json. Each variant resumes from its own run directory.
"""
import argparse
import json
import platform
import time
from pathlib import Path

import torch

from megabit.data import load_cifar10
from megabit.train.classifier import TrainConfig, train_classifier
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--epochs-bn", type=int, default=6)
ap.add_argument("--epochs-bsn", type=int, default=3)
ap.add_argument("--variants", default="float,bn-only,bn-bsn")
ap.add_argument("--results", default="results/nqe_ablation.json")
a = ap.parse_args()
train, test = load_cifar10(a.data_root, "train"), load_cifar10(a.data_root, "test")
variants = {
    "float": TrainConfig(epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn, quantize=False),
    "bn-only": TrainConfig(epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn, norm="bn-only"),
    "bn-bsn": TrainConfig(epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn),
}
out = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
       "data": train.source, "note": "CIFAR-10 is the JPEG-q75 copy; accuracy with flip TTA on the full 10k test set",
       "budget_epochs": a.epochs_bn + a.epochs_bsn, "variants": {}}
for name in a.variants.split(","):
    t0 = time.time()
    r = train_classifier(variants[name], train, test, Path(a.out) / name, resume=True)
    out["variants"][name] = {"accuracy": r["accuracy"], "train_wall_s": r["train_wall_s"], "epochs": r["epochs"],
                             "notes": r["notes"], "config": variants[name].to_dict()}
    atomic_write_text(a.results, json.dumps(out, indent=2))
    print(name, r["accuracy"], f"{time.time() - t0:.0f}s", flush=True)
