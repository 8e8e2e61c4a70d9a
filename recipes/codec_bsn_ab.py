"""Recipe: the patch encoder's BN -> BSN conversions compared after the same fine-tuning, from one start.

    python recipes/codec_bsn_ab.py RUN/qat_bn_end.pt --data-root ../shared/data/photos --out runs/ab \
        --minutes 6 --threads 2 --json results/codec_bsn_ab.json

RUN/qat_bn_end.pt (written by `megabit train-codec` at the end of its qat_bn stage: the BN-mode
codec, its float teacher and the run's training config) is converted once per method (``quantile``,
the paper's reading; ``fit``, [I] ours: shifts and offsets fitted to the BN encoder's codes) into a
run folder OUT/METHOD at the start of the qat_bsn stage, and each is fine-tuned for ``--minutes``
of qat_bsn exactly as train-codec would (same teacher, same code distillation, same training crops,
a fresh optimizer), without the refine stage. Reported: held-out PSNR per rate (the photos that
train-codec validates on, never Kodak or CLIC) right after conversion and at the end of the stage.
The two arms run one after the other: do not run anything else on the CPU meanwhile (the stage is
a wall-clock budget).
"""
import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from megabit.codec.train import (TrainCodecConfig, load_qat_bn_end, split_train_val, train_codec, validate,
                                 write_bsn_start)
from megabit.data.images import load_folder
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("bn_end", help="qat_bn_end.pt of a train-codec run")
ap.add_argument("--data-root", required=True, help="the run's training photos folder")
ap.add_argument("--out", required=True, help="folder for the two arms (OUT/quantile, OUT/fit)")
ap.add_argument("--minutes", type=float, default=6.0, help="qat_bsn minutes per arm")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--methods", default="quantile,fit")
ap.add_argument("--teacher-from", default=None,
                help="the run's checkpoint.pt taken in its qat_bn/qat_bsn stage, for a qat_bn_end.pt without the teacher")
ap.add_argument("--json", default=None, help="write the results here")
a = ap.parse_args()
methods = [m for m in a.methods.split(",") if m]
if not methods or any(m not in ("quantile", "fit") for m in methods):
    sys.exit(f"codec_bsn_ab: error: --methods takes quantile and/or fit, got {a.methods!r}")
if not a.minutes > 0:
    sys.exit(f"codec_bsn_ab: error: --minutes must be > 0, got {a.minutes}")
torch.set_num_threads(a.threads)
try:
    _, obj = load_qat_bn_end(a.bn_end)
    tcfg = TrainCodecConfig.from_dict(obj["train_config"]) if "train_config" in obj else None
    if tcfg is None:  # an older qat_bn_end.pt: the run's config.json beside it
        tcfg = TrainCodecConfig.from_dict(json.loads((Path(a.bn_end).parent / "config.json").read_text())["train"])
    train, val = split_train_val(load_folder(a.data_root), tcfg.n_val)
except (KeyError, OSError, ValueError, RuntimeError, EOFError) as e:
    sys.exit(f"codec_bsn_ab: error: {str(e).splitlines()[0]}")

res = {"command": "python " + " ".join(sys.argv), "bn_end": a.bn_end, "qat_bsn_minutes": a.minutes, "threads": a.threads, "val_images": int(val.shape[0]),
       "data": f"held-out {a.data_root} photos (train-codec's split), centre crops {val.shape[2]}x{val.shape[3]}",
       "train_config": tcfg.to_dict(), "arms": {}}
for meth in methods:
    arm = Path(a.out) / meth
    acfg = replace(tcfg, minutes=(0.0, 0.0, a.minutes, 0.0), bsn_init=meth, threads=a.threads, init=None, init_refine=None)
    try:
        m = write_bsn_start(arm, a.bn_end, acfg, train, teacher_from=a.teacher_from)
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        sys.exit(f"codec_bsn_ab: error: {str(e).splitlines()[0]}")
    start = validate(m.eval(), val)
    print(f"{meth}: after conversion {start}", flush=True)
    final = train_codec(a.data_root, arm, acfg, resume=True, log=lambda s: None)
    ends = [r for r in final["metrics"] if r["stage"] == "qat_bsn"]
    r = {"after_conversion": start, "stage_end": ends[-1]["val_psnr"], "steps": ends[-1]["step"],
         "curve": [{k: x[k] for k in ("stage_s", "val_psnr", "n_val")} for x in ends]}
    res["arms"][meth] = r
    print(f"{meth}: after {a.minutes:g} min of qat_bsn ({r['steps']} steps) {r['stage_end']}", flush=True)
if a.json:
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.json, json.dumps(res, indent=2))
