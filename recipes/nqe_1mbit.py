"""Recipe: the shipped 1-Mbit NQE CIFAR-10 classifier (src/megabit/assets/nqe-1mbit.pt).

    python recipes/nqe_1mbit.py --data-root ../shared/data/cifar10-jpeg-q75 --out runs/nqe-1mbit [--resume]

Equivalent CLI: megabit train-classifier --preset nqe-1mbit --epochs-bn 60 --epochs-bsn 24 ...
Machine used for the shipped model: 2-core x86_64 CPU, torch 2.13.0+cpu (see results/nqe_1mbit_scratch84.json; the bundled model now comes from recipes/nqe_1mbit_from_float.py).
"""
import argparse
import json
import sys

from megabit.data import load_cifar10
from megabit.train.classifier import TrainConfig, train_classifier

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--epochs-bn", type=int, default=60)
ap.add_argument("--epochs-bsn", type=int, default=24)
ap.add_argument("--limit-train", type=int, default=None)
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--preset", default="nqe-1mbit")
a = ap.parse_args()
cfg = TrainConfig(preset=a.preset, epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn)
train = load_cifar10(a.data_root, "train", a.limit_train)
test = load_cifar10(a.data_root, "test", a.limit_test)
res = train_classifier(cfg, train, test, a.out, resume=a.resume)
json.dump(res, sys.stdout, indent=2)
