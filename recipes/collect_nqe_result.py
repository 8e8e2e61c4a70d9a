"""Collect a finished classifier run directory into results/nqe_1mbit.json (curve, budget, machine)."""
import argparse
import json
import platform

import torch

from megabit.export import budget_table
from megabit.models import NQEConfig
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("run", nargs="?", default="runs/nqe-1mbit")
ap.add_argument("out", nargs="?", default="results/nqe_1mbit.json")
ap.add_argument("--command", default=None, help="the command that trained the run (default: recipes/nqe_1mbit.py)")
ap.add_argument("--note", default=None, help="free text stored with the result (e.g. what the start was)")
ap.add_argument("--float-run", default=None,
                help="the float stage's run dir (recipes/nqe_1mbit_from_float.py OUT/float): its accuracy, "
                     "curve and wall time are stored with the result and counted in the total")
ap.add_argument("--teacher-run", default=None,
                help="the distillation teacher's run dir (megabit train-teacher / the recipe's OUT/teacher): its "
                     "accuracy, curve and wall time are stored with the result and counted in the total")
ap.add_argument("--mbit", default=None,
                help="the run's packed .mbit file (megabit pack): its size in bits is stored as the model's stored bits, "
                     "e.g. for a layer table that fits 2^20 only entropy-coded (nqe-1mbit-ans)")
a = ap.parse_args()
run, out = a.run, a.out
res = json.load(open(f"{run}/result.json"))
cfg = json.load(open(f"{run}/config.json"))
hist = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
bn = [h for h in hist if h["phase"] == "bn"]
# a BSN-only fine-tune (--init a BN-mode model, --epochs-bn 0) starts at its init's BN-phase end
bn_acc = bn[-1]["test_acc"] if bn else res.get("notes", {}).get("init_accuracy")
t = budget_table(NQEConfig.from_dict(cfg["model"]))
doc = {
    "model": cfg["model"].get("name") or "nqe-1mbit",
    "command": a.command or f"python recipes/nqe_1mbit.py --data-root ../shared/data/cifar10-jpeg-q75 --out {run}",
    "note": a.note,
    "data": "CIFAR-10, JPEG-q75 copy (shared/data/cifar10-jpeg-q75): 50k train / full 10k test",
    "test_accuracy": res["accuracy"],
    "test_accuracy_note": ("BSN model, integer-exact, horizontal-flip TTA" if cfg["train"]["epochs_bsn"] > 0 else
                           "BN-mode model (the run had no BSN phase: convert it, e.g. recipes/nqe_bsn_scale.py, "
                           "and evaluate the converted model), horizontal-flip TTA"),
    "per_class": res["per_class"], "total_bits": t["total_bits"], "limit_bits": 1 << 20,
    "epochs": res["epochs"], "epochs_bn": cfg["train"]["epochs_bn"], "epochs_bsn": cfg["train"]["epochs_bsn"],
    "train_wall_s": res["train_wall_s"], "accuracy_end_of_bn_phase": bn_acc,
    "accuracy_right_after_bsn_conversion": res["notes"].get("bsn_after_conversion"),
    "accuracy_at_start": res["notes"].get("init_accuracy"),
    "machine": {"cpu": "2-core x86_64 (shared VM), no GPU", "platform": platform.platform(), "torch": torch.__version__},
    "train_config": cfg["train"],
    "curve": [{"epoch": h["epoch"], "phase": h["phase"], "test_acc": h["test_acc"], "train_acc": h["train_acc"],
               "epoch_s": h["epoch_s"]} for h in hist],
    "final_quant_stats": hist[-1]["quant"],
}
if a.float_run:
    fres = json.load(open(f"{a.float_run}/result.json"))
    fhist = [json.loads(l) for l in open(f"{a.float_run}/metrics.jsonl")]
    doc["float_stage"] = {"run": a.float_run, "test_accuracy": fres["accuracy"], "epochs": fres["epochs"],
                          "train_wall_s": fres["train_wall_s"],
                          "curve": [{"epoch": h["epoch"], "test_acc": h["test_acc"], "epoch_s": h["epoch_s"]}
                                    for h in fhist]}
    doc["total_train_wall_s"] = round(fres["train_wall_s"] + res["train_wall_s"], 1)
if a.teacher_run:
    tres = json.load(open(f"{a.teacher_run}/result.json"))
    thist = [json.loads(l) for l in open(f"{a.teacher_run}/metrics.jsonl")]
    doc["teacher_stage"] = {"run": a.teacher_run, "model": "airbench (megabit.models.teacher)",
                            "test_accuracy": tres["accuracy"], "epochs": tres["epochs"],
                            "train_wall_s": tres["train_wall_s"],
                            "curve": [{"epoch": h["epoch"], "test_acc": h["test_acc"], "epoch_s": h["epoch_s"]}
                                      for h in thist]}
    doc["total_train_wall_s"] = round(doc.get("total_train_wall_s", res["train_wall_s"]) + tres["train_wall_s"], 1)
if a.mbit:
    import os
    bits = 8 * os.path.getsize(a.mbit)
    doc["packed_file"] = {"path": a.mbit, "bits": bits, "fits_2^20": bits <= 1 << 20}
    doc["raw_bits"], doc["total_bits"] = doc["total_bits"], bits  # the file is what is stored
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None) \
    if platform.system() == "Linux" else None
if cpu:
    doc["machine"]["cpu_model"] = cpu
atomic_write_text(out, json.dumps(doc, indent=2))
print(json.dumps({k: doc[k] for k in ("test_accuracy", "total_bits", "epochs", "train_wall_s", "accuracy_end_of_bn_phase",
                                      "accuracy_right_after_bsn_conversion")}
                 | {k: doc[k] for k in ("total_train_wall_s",) if k in doc}))
