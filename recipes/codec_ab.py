"""A/B of a codec training option at equal wall-clock minutes of the float stage (stage 1 only).

    python recipes/codec_ab.py --data-root ../shared/data/photos --work runs --minutes 8 \
        --option binarize --values ste stochastic --out results/codec_binarize_ab.json

Each arm is ``recipes/codec_train.py --minutes M 0 0 0 --<option> <value>`` in ``<work>/ab_<value>``
(resumed if it exists, so arms can be run one at a time); the result is the float stage's final
validation PSNR on the 16 held-out photos (patch decoder, no refinement) per rate, and its steps.
Arms run one after another on the same settings; the machine load is the caller's to keep equal.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from megabit.codec.train import TrainCodecConfig, train_codec
from megabit.models.patch_codec import PatchCodecConfig
from megabit.utils import atomic_write_text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--work", default="runs")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--option", default="binarize", choices=["binarize", "loss"])
    ap.add_argument("--values", nargs="+", default=["ste", "stochastic"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    arms = {}
    for v in a.values:
        tcfg = TrainCodecConfig(minutes=(a.minutes, 0.0, 0.0, 0.0), threads=a.threads, **{a.option: v})
        run = Path(a.work) / f"ab_{v}"
        train_codec(a.data_root, run, tcfg, PatchCodecConfig(), resume=True, log=lambda *_: None)
        recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in recs if r["stage"] == "float" and r["n_val"] > 4][-1]
        arms[v] = {"val_psnr_no_refine": last["val_psnr"], "steps": last["step"], "minutes": last["train_min"],
                   "n_val": last["n_val"], "curve": [(r["train_min"], r["val_psnr"]) for r in recs if r["stage"] == "float"]}
        print(v, json.dumps(arms[v]["val_psnr_no_refine"]), arms[v]["steps"], "steps", flush=True)
    out = {"what": f"codec float stage, {a.minutes} wall minutes per arm, option {a.option}",
           "note": "val = 16 held-out photos/ crops (128x128 centre), per-patch decoder, rounded output; "
                   "curve points before the end use 4 of them",
           "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": a.threads},
           "arms": arms, "command": " ".join(["python", *sys.argv])}
    atomic_write_text(a.out, json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
