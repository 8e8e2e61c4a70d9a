"""Recipe: fine-tune the shipped 1-Mbit classifier, distilled from a float teacher (BSN phase only).

    python recipes/nqe_1mbit_finetune.py --data-root ../shared/data/cifar10-jpeg-q75 \\
        --teacher runs/nqe-full/float/model.pt --out runs/nqe-ft --epochs 10 \\
        --results results/nqe_1mbit_finetune.json [--resume]

Starts from the bundled ``nqe-1mbit.mbit`` (its exact integer codes, shifts and offsets; see
``TrainConfig.init``), trains the BSN phase with ``(1 - a) CE + a T^2 KL(teacher || student)``,
then packs the result (tANS ``.mbit``, as `megabit pack`), checks the integer-only path against
the fake-quantized model on the whole test set and writes one JSON with the machine and budget.
The teacher: the full-budget float run of ``recipes/nqe_ablation.py --variants float`` (same
architecture, no quantization). Equivalent CLI for the training part:
``megabit train-classifier --init nqe-1mbit --teacher T --epochs-bn 0 --epochs-bsn 10 --lr-bsn 2e-4 --warmup-bsn 0``.
"""
import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from megabit.data import load_cifar10
from megabit.export import IntegerNQE, budget_table
from megabit.fmt.mbit import write_mbit
from megabit.train.classifier import TrainConfig, evaluate, load_classifier, predict_logits, train_classifier
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--init", default="nqe-1mbit", help="bundled name, .mbit or model.pt to start from")
ap.add_argument("--teacher", default=None, help="float classifier model.pt (none: plain fine-tune, no KD)")
ap.add_argument("--epochs", type=int, default=10)
ap.add_argument("--lr", type=float, default=2e-4)
ap.add_argument("--kd-alpha", type=float, default=0.7)
ap.add_argument("--kd-temperature", type=float, default=4.0)
ap.add_argument("--threads", type=int, default=None)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--limit-train", type=int, default=None)
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--results", default=None, help="write the summary JSON here")
a = ap.parse_args()

cfg = TrainConfig(epochs_bn=0, epochs_bsn=a.epochs, lr_bsn=a.lr, warmup_bsn=0.0, init=a.init, teacher=a.teacher,
                  kd_alpha=a.kd_alpha, kd_temperature=a.kd_temperature, threads=a.threads,
                  limit_train=a.limit_train, limit_test=a.limit_test)
train = load_cifar10(a.data_root, "train", a.limit_train)
test = load_cifar10(a.data_root, "test", a.limit_test)
t0 = time.time()
res = train_classifier(cfg, train, test, a.out, resume=a.resume)
model = load_classifier(Path(a.out) / "model.pt")
mbit = Path(a.out) / "model.mbit"
nbytes = write_mbit(IntegerNQE.from_model(model), mbit)
net = IntegerNQE.from_model(model)
li, lf = net.predict(test.x, tta=True), predict_logits(model, test.x, tta=True)
teacher_acc = evaluate(load_classifier(a.teacher), test)["accuracy"] if a.teacher else None
out = {
    "model": "nqe-1mbit fine-tuned" + (" with distillation" if a.teacher else ""),
    "command": "python " + " ".join(shlex.quote(s) for s in sys.argv),
    "data": f"CIFAR-10, {test.source}: {len(train)} train / {len(test)} test",
    "start": a.init, "start_accuracy": res["notes"].get("init_accuracy"),
    "test_accuracy": res["accuracy"], "test_accuracy_note": "BSN model, horizontal-flip TTA",
    "integer_accuracy": float((li.argmax(1) == test.y).float().mean()),
    "integer_mismatches": int((li.argmax(1) != lf.argmax(1)).sum()),
    "teacher": a.teacher, "teacher_accuracy": teacher_acc,
    "raw_bits": budget_table(model.cfg)["total_bits"], "mbit_file": str(mbit), "mbit_bits": 8 * nbytes,
    "limit_bits": 1 << 20, "epochs": a.epochs, "train_wall_s": res["train_wall_s"],
    "wall_s_total": round(time.time() - t0, 1), "notes": res["notes"],
    "curve": [json.loads(l) for l in (Path(a.out) / "metrics.jsonl").read_text().splitlines()],
    "train_config": cfg.to_dict(),
    "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                "torch": torch.__version__, "threads": torch.get_num_threads()},
}
for r in out["curve"]:
    r.pop("quant", None)
if a.results:
    atomic_write_text(a.results, json.dumps(out, indent=2))
json.dump({k: v for k, v in out.items() if k not in ("curve", "train_config")}, sys.stdout, indent=2)
print()
