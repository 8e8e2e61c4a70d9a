"""Recipe: adaptive rate (a rate per patch, ``compress --bpp``) against the fixed rates, paired per image.

    python recipes/codec_adaptive_study.py --data-root ../shared/data/kodak \\
        [--model codec-nested-v4] [--limit N] [--search STEPS] [--json results/codec_kodak_adaptive.json]

For every image: the fixed-rate files at each of the model's rates (smallest coding, real size;
with ``--search``, of each rate's searched code, the same codes the adaptive files choose among),
then adaptive files aimed at each of those files' real bpp and at the midpoints between them, and
JPEG at <= each adaptive file's real size (its smallest file where it cannot get that small). The
summary gives the mean bpp / PSNR / MS-SSIM / blockiness of each point, the paired gain of the
adaptive file over the fixed-rate one of (at most) the same size, and, at the midpoints, the gain
over the fixed-rate curve interpolated (linearly in log bpp) at the adaptive file's bpp.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from tqdm import tqdm

from megabit.codec import anchors
from megabit.codec.api import coded_files, decode_header_bits, decompress_bytes, load_codec
from megabit.codec.evaluate import _quality, machine_info
from megabit.codec.ratecontrol import AdaptiveCoder
from megabit.data.images import list_images, load_rgb
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--data-root", required=True)
ap.add_argument("--model", default=None)
ap.add_argument("--limit", type=int, default=0)
ap.add_argument("--search", type=int, default=0, metavar="STEPS", help="encoder-side code search at every rate")
ap.add_argument("--json", default=None)
a = ap.parse_args()

try:
    codec = load_codec(a.model)
    files = list_images(a.data_root)
except ValueError as e:
    sys.exit(f"error: {e}")
files = files[: a.limit] if a.limit else files
rates = sorted(codec.model.cfg.rates)
rows, t0 = [], time.time()
for f in tqdm(files, desc="images"):
    img = load_rgb(f)
    npx = img.shape[0] * img.shape[1]
    row = {"image": f.name, "fixed": {}, "adaptive": []}
    coder = AdaptiveCoder.prepare(img, codec, search=a.search)
    for r in rates:  # the same code bits as compress_image(img, codec, r) (+ the search, if any)
        d = min(coded_files(coder.bits[r], coder.gh, coder.gw, codec, img.shape[1], img.shape[0], 3, r).values(), key=len)
        row["fixed"][str(r)] = {"bpp": 8 * len(d) / npx, **_quality(img, decompress_bytes(d, codec))}
    fixed_bpp = [row["fixed"][str(r)]["bpp"] for r in rates]
    targets = sorted(fixed_bpp + [0.5 * (p + q) for p, q in zip(fixed_bpp, fixed_bpp[1:])])
    for t in targets:
        d = coder.code(t)
        hd, _, pr = decode_header_bits(d, codec)
        pr = np.full(hd.n_patches, hd.rate_bits) if pr is None else pr  # one rate everywhere: a fixed-rate file
        jp = anchors.encode_at_bpp(img, "jpeg", 8 * len(d) / npx)
        row["adaptive"].append({"target_bpp": t, "bpp": 8 * len(d) / npx, **_quality(img, decompress_bytes(d, codec)),
                                "share_of_rates": {str(r): float(np.mean(pr == r)) for r in rates},
                                "jpeg": {"bpp": jp["bpp"], "over_target": jp["over_target"],
                                         **_quality(img, jp["decoded"])}})
    rows.append(row)

n_t = len(rows[0]["adaptive"])
mean = lambda xs: float(np.mean(xs))  # noqa: E731
summary = {
    "fixed": {str(r): {k: mean([x["fixed"][str(r)][k] for x in rows]) for k in ("bpp", "psnr", "ms_ssim", "blockiness")}
              for r in rates},
    "adaptive": [{k: mean([x["adaptive"][i][k] for x in rows]) for k in ("target_bpp", "bpp", "psnr", "ms_ssim", "blockiness")}
                 | {"jpeg_bpp": mean([x["adaptive"][i]["jpeg"]["bpp"] for x in rows]),
                    "jpeg_psnr": mean([x["adaptive"][i]["jpeg"]["psnr"] for x in rows]),
                    "share_of_rates": {str(r): mean([x["adaptive"][i]["share_of_rates"][str(r)] for x in rows]) for r in rates}}
                 for i in range(n_t)],
}
# paired at the fixed-rate files' sizes: targets 0, 2, 4 are the fixed files' own bpp
summary["paired_at_fixed_size"] = {
    str(r): {"fixed_psnr": summary["fixed"][str(r)]["psnr"], "adaptive_psnr": summary["adaptive"][2 * i]["psnr"],
             "gain_db": summary["adaptive"][2 * i]["psnr"] - summary["fixed"][str(r)]["psnr"],
             "adaptive_bpp": summary["adaptive"][2 * i]["bpp"], "fixed_bpp": summary["fixed"][str(r)]["bpp"],
             "vs_jpeg_db": summary["adaptive"][2 * i]["psnr"] - summary["adaptive"][2 * i]["jpeg_psnr"]}
    for i, r in enumerate(rates)}
# midpoints: against the fixed curve interpolated linearly in log bpp, per image (3 fixed points are
# too few for a Bjontegaard delta, which needs 4)
def gain_mid(x, i):
    fb = [x["fixed"][str(r)]["bpp"] for r in rates]
    fp = [x["fixed"][str(r)]["psnr"] for r in rates]
    y = x["adaptive"][i]
    return y["psnr"] - float(np.interp(np.log(y["bpp"]), np.log(fb), fp))


summary["gain_over_interpolated_fixed_db"] = {f"{i}": mean([gain_mid(x, i) for x in rows]) for i in range(1, n_t, 2)}
out = {"data_root": a.data_root, "model": codec.name, "rates": rates, "n_images": len(rows), "search_steps": a.search,
       "command": " ".join(["python", *sys.argv]), "seconds": round(time.time() - t0, 1), "machine": machine_info(),
       "summary": summary, "per_image": rows}
print(f"{len(rows)} images, model {codec.name}, {out['seconds']} s")
print("| point | bpp real | PSNR dB | MS-SSIM | blockiness | JPEG at <= size: bpp / PSNR |")
print("|---|---:|---:|---:|---:|---|")
for r in rates:
    s = summary["fixed"][str(r)]
    print(f"| fixed {r} | {s['bpp']:.4f} | {s['psnr']:.2f} | {s['ms_ssim']:.4f} | {s['blockiness']:.2f} | |")
for s in summary["adaptive"]:
    print(f"| adaptive -> {s['target_bpp']:.4f} | {s['bpp']:.4f} | {s['psnr']:.2f} | {s['ms_ssim']:.4f} | "
          f"{s['blockiness']:.2f} | {s['jpeg_bpp']:.4f} / {s['jpeg_psnr']:.2f} |")
for r, p in summary["paired_at_fixed_size"].items():
    print(f"at the size of fixed {r}: adaptive {p['gain_db']:+.3f} dB, vs JPEG {p['vs_jpeg_db']:+.2f} dB")
for i, g in summary["gain_over_interpolated_fixed_db"].items():
    print(f"adaptive point {i} (a midpoint): {g:+.3f} dB over the fixed curve interpolated at its bpp")
if a.json:
    atomic_write_text(a.json, json.dumps(out, indent=1))
