"""Pilot A/B: two-stage QAT (``--epochs-act``) against one-stage QAT at equal epochs, paired seeds.

    python recipes/nqe_two_stage_pilot.py --data-root ../shared/data/cifar10-jpeg-q75 --out runs/s40pilot \
        --preset nqe-1mbit --limit-train 15000 --limit-test 5000 --float-epochs 8 --epochs 6 --act-epochs 0,2 \
        --seeds 0,1 --json results/nqe_two_stage_pilot_s40.json   # session 40's run

    python recipes/nqe_two_stage_pilot.py --data-root ../shared/data/cifar10-jpeg-q75 --out runs/s41w8 \
        --preset nqe-1mbit --qat-preset nqe-1mbit-w8 --twin runs/s40pilot/float/model.pt --limit-train 15000 \
        --limit-test 5000 --epochs 6 --act-epochs 0 --seeds 0,1 --json results/nqe_first_w8_pilot_s41.json  # session 41

A float twin of ``--preset`` (``--float-epochs``, on the same training slice), then for each seed and each
``--act-epochs`` value A one QAT run from it with KD from it (alpha 0.7, T 4): A epochs of quantized
activations on float weights (``TrainConfig.epochs_act``), then ``--epochs - A`` BN-phase epochs, in
``--qat-preset``'s layer table (``--twin``: reuse a twin); no BSN phase (the per-channel conversion after it is
nearly lossless, sessions 34-39). Recorded per run: the QAT start (both quantized), the act stage's start, the BN
stage's start, the BN end, all on the test set (``--limit-test`` images) with flip TTA. Every stage resumes with ``--resume``; the JSON is rewritten after each run.

[I] A pilot on a training slice with a short schedule: it can show a large effect, not a 0.3-point one.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from megabit.data import load_cifar10
from megabit.data.cifar import DataError
from megabit.models.nqe import get_preset
from megabit.train.classifier import TrainConfig, evaluate, load_classifier, train_classifier
from megabit.utils import atomic_write_text


def _ints(s: str) -> list[int]:
    try:
        v = [int(t) for t in s.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not v or min(v) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {s!r}")
    return v


ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--preset", default="nqe-1mbit")
ap.add_argument("--qat-preset", default=None,
                help="the QAT runs' layer table (TrainConfig.init_preset; same shapes as --preset, a float start's "
                     "levels and step rules may differ), e.g. nqe-1mbit-w8; default: --preset")
ap.add_argument("--twin", default=None,
                help="an existing float twin (model.pt) of --preset on the same slice: skips training one")
ap.add_argument("--limit-train", type=int, default=25000)
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--float-epochs", type=int, default=10)
ap.add_argument("--epochs", type=int, default=8, help="QAT epochs of every run (act stage + BN phase)")
ap.add_argument("--act-epochs", type=_ints, default=[0, 2], help="the arms: epochs of the act stage (0: one-stage)")
ap.add_argument("--seeds", type=_ints, default=[0, 1])
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--kd-alpha", type=float, default=0.7)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--no-compile", action="store_true")
ap.add_argument("--json", default=None)
a = ap.parse_args()
for opt, name in (("--preset", a.preset), ("--qat-preset", a.qat_preset)):
    try:
        if name is not None:
            get_preset(name)
    except ValueError as e:
        ap.error(f"{opt}: {e}")
if any(n >= a.epochs for n in a.act_epochs):
    ap.error(f"--act-epochs must each be below --epochs ({a.epochs}): the BN phase needs an epoch")
try:
    train = load_cifar10(a.data_root, "train", a.limit_train)
    test = load_cifar10(a.data_root, "test", a.limit_test)
except DataError as e:
    sys.exit(f"nqe_two_stage_pilot: error: {e}")
out = Path(a.out)
common = dict(preset=a.preset, compile=not a.no_compile, eval_every=10_000)
t0 = time.time()
if a.twin:
    try:
        twin_model = load_classifier(a.twin)
    except ValueError as e:
        sys.exit(f"nqe_two_stage_pilot: error: {e}")
    if twin_model.cfg.quantize:
        sys.exit(f"nqe_two_stage_pilot: error: --twin {a.twin} is quantized (expects a float model)")
    twin = {"accuracy": evaluate(twin_model, test)["accuracy"], "train_wall_s": None}
    teacher = a.twin
else:
    twin = train_classifier(TrainConfig(quantize=False, epochs_bn=a.float_epochs, epochs_bsn=0, **common), train,
                            test, out / "float", resume=a.resume)
    teacher = str(out / "float" / "model.pt")
report = {"recipe": " ".join(sys.argv), "preset": a.preset, "qat_preset": a.qat_preset or a.preset,
          "train_images": len(train), "test_images": len(test),
          "data": train.source, "note": "CIFAR-10 JPEG-q75 copy; flip TTA; one BN end per run, no conversion",
          "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
                     f"{torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}",
          "float": {"accuracy": twin["accuracy"], "epochs": None if a.twin else a.float_epochs, "model": teacher,
                    "train_wall_s": twin["train_wall_s"]},
          "runs": []}
for seed in a.seeds:
    for act in a.act_epochs:
        torch._dynamo.reset()  # each run compiles its own model; one process's cache would hit dynamo's recompile limit
        cfg = TrainConfig(init=teacher, teacher=teacher, kd_alpha=a.kd_alpha, epochs_act=act, epochs_bn=a.epochs - act,
                          epochs_bsn=0, lr=a.lr, seed=seed, init_preset=a.qat_preset, **common)
        r = train_classifier(cfg, train, test, out / f"act{act}-seed{seed}", resume=a.resume)
        n = r["notes"]
        report["runs"].append({"act_epochs": act, "bn_epochs": a.epochs - act, "seed": seed, "bn_end": r["accuracy"],
                               "qat_start": n.get("init_accuracy"), "act_stage_start": n.get("act_stage_start"),
                               "bn_stage_start": n.get("bn_stage_start"), "train_wall_s": r["train_wall_s"]})
        report["wall_min"] = round((time.time() - t0) / 60, 1)
        if a.json:
            atomic_write_text(a.json, json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["runs"][-1]), flush=True)
