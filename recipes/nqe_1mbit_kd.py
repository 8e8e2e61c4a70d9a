"""Recipe: 1-Mbit NQE classifier distilled from a float teacher of the same architecture [I].

Step 1 trains the float teacher (``quantize=False``, BatchNorm), step 2 the quantized student
(BN phase, then BSN with no learning-rate warm-up: session 1's run lost accuracy in the re-warm of
phase 2) with ``loss = (1 - a) CE + a T^2 KL(teacher_T || student_T)``. Both steps checkpoint every
epoch and resume with ``--resume``.

    python recipes/nqe_1mbit_kd.py --data-root ../shared/data/cifar10-jpeg-q75 --out runs/nqe-kd \\
        --teacher-epochs 30 --epochs-bn 60 --epochs-bsn 24 [--resume]

Not yet run to completion on the project's 2-core CPU (about 3x the CPU time of recipes/nqe_1mbit.py).
"""
import argparse
import json
import sys
from pathlib import Path

from megabit.data import load_cifar10
from megabit.train.classifier import TrainConfig, train_classifier

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--teacher-epochs", type=int, default=30)
ap.add_argument("--epochs-bn", type=int, default=60)
ap.add_argument("--epochs-bsn", type=int, default=24)
ap.add_argument("--kd-alpha", type=float, default=0.7)
ap.add_argument("--kd-temperature", type=float, default=4.0)
ap.add_argument("--warmup-bsn", type=float, default=0.0)
ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
ap.add_argument("--limit-train", type=int, default=None)
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--preset", default="nqe-1mbit")
a = ap.parse_args()
out = Path(a.out)
train = load_cifar10(a.data_root, "train", a.limit_train)
test = load_cifar10(a.data_root, "test", a.limit_test)
teacher_dir = out / "teacher"
if not (teacher_dir / "model.pt").exists():
    tcfg = TrainConfig(preset=a.preset, epochs_bn=a.teacher_epochs, epochs_bsn=0, quantize=False, bf16=a.bf16)
    res_t = train_classifier(tcfg, train, test, teacher_dir, resume=a.resume)
    print("teacher:", json.dumps(res_t), flush=True)
cfg = TrainConfig(preset=a.preset, epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn, bf16=a.bf16,
                  teacher=str(teacher_dir / "model.pt"), kd_alpha=a.kd_alpha, kd_temperature=a.kd_temperature,
                  warmup_bsn=a.warmup_bsn)
res = train_classifier(cfg, train, test, out / "student", resume=a.resume)
json.dump(res, sys.stdout, indent=2)
