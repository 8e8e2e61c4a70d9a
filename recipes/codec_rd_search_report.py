"""Report: encoder vs distortion-only search vs rate-distortion search, paired on the same images.

    python recipes/codec_rd_search_report.py --base results/codec_kodak.json \\
        --runs search80=results/codec_kodak_search80_ctx_r128.json rd0.001=results/codec_kodak_rd001_r128.json \\
        --rate 128 [--json results/codec_kodak_rd_search_r128.json]

Each run is a ``megabit eval-codec --json`` result (partial files are fine: only the images every
run finished are compared). ``--base`` is the encoder-only evaluation (real rate with the context
model). For every variant: mean real bpp, PSNR, blockiness, and JPEG at <= the variant's real size
of each image (``jpeg@real``, JPEG's smallest file where it cannot get that small).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--base", required=True)
ap.add_argument("--runs", nargs="+", required=True, metavar="LABEL=JSON")
ap.add_argument("--rate", type=int, required=True)
ap.add_argument("--json", default=None)
a = ap.parse_args()
r = str(a.rate)
rows = {"encoder": {x["image"]: x for x in json.load(open(a.base))["per_image"][r]}}
for spec in a.runs:
    label, path = spec.split("=", 1)
    rows[label] = {x["image"]: x for x in json.load(open(path))["per_image"][r]}
images = sorted(set.intersection(*(set(v) for v in rows.values())))
if not images:
    sys.exit("no image is in every run")
out = {"rate_bits": a.rate, "images": images, "base": a.base, "runs": dict(s.split("=", 1) for s in a.runs),
       "command": " ".join(["python", *sys.argv]), "mean": {}}
print(f"{len(images)} images at {a.rate} bits/patch\n")
print("| variant | bpp real | PSNR dB | blockiness | JPEG at <= that size: bpp / PSNR | vs JPEG dB |")
print("|---|---:|---:|---:|---|---:|")
for label, by in rows.items():
    m = lambda f: float(np.mean([f(by[i]) for i in images]))  # noqa: E731
    s = {"bpp_real": m(lambda x: x["bpp_real"]), "psnr": m(lambda x: x["psnr"]), "blockiness": m(lambda x: x["blockiness"]),
         "jpeg_bpp": m(lambda x: x["jpeg@real"]["bpp"]), "jpeg_psnr": m(lambda x: x["jpeg@real"]["psnr"]),
         "jpeg_larger": int(sum(by[i]["jpeg@real"]["bpp"] > by[i]["bpp_real"] for i in images))}
    out["mean"][label] = {k: round(v, 4) for k, v in s.items()}
    print(f"| {label} | {s['bpp_real']:.4f} | {s['psnr']:.2f} | {s['blockiness']:.2f} | {s['jpeg_bpp']:.4f} / "
          f"{s['jpeg_psnr']:.2f} (larger on {s['jpeg_larger']}) | {s['psnr'] - s['jpeg_psnr']:+.2f} |")
if a.json:
    atomic_write_text(a.json, json.dumps(out, indent=1))
