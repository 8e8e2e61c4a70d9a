"""Validation PSNR vs training minutes of a codec run -> results/codec_train.json + codec_train_curve.png.

    python recipes/codec_plot_train.py runs/codec_final [NAME]

NAME (default ``codec_train``) names the outputs: results/NAME.json, results/NAME_curve.png.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from megabit.codec.evaluate import machine_info
from megabit.utils import atomic_write_text

run = Path(sys.argv[1])
name = sys.argv[2] if len(sys.argv) > 2 else "codec_train"
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
res = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
cfg = json.loads((run / "config.json").read_text())
out = {"run": str(run), "config": cfg, "final": {k: v for k, v in res.items() if k != "metrics"}, "curve": rows,
       "machine": machine_info(),
       "note": "val PSNR on held-out 128x128 centre crops of shared/data/photos (4 crops during a stage, 16 at stage ends)"}
atomic_write_text(f"results/{name}.json", json.dumps(out, indent=1))
fig, ax = plt.subplots(figsize=(7, 4))
rates = sorted(rows[0]["val_psnr"], key=int)
for r in rates:
    ax.plot([x["train_min"] for x in rows], [x["val_psnr"][r] for x in rows], "o-", ms=3, label=f"{r} bits/patch ({int(r) / 1024:g} bpp)")
t = 0.0
for m, stage in zip(cfg["train"]["minutes"], ("float", "qat_bn", "qat_bsn", "refine")):
    ax.axvline(t, c="gray", lw=0.5)
    ax.text(t + 0.1, ax.get_ylim()[0] + 0.3, stage, fontsize=7, rotation=90)
    t += m
ax.set_xlabel("training minutes (1 CPU thread, shared)")
ax.set_ylabel("val PSNR (dB)")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(f"results/{name}_curve.png", dpi=110)
print(json.dumps(out["final"], indent=1))
