"""Recipe: choose the code-search settings on training photos (never on Kodak/CLIC).

    python recipes/codec_search_sweep.py --data-root ../shared/data/photos --n 6 \\
        [--grid "0.05,0.02,40 0.1,0.05,40 0.02,0.01,40 0.05,0.01,40 0.05,0.03,40 0.05,0.02,80"] \\
        [--json results/codec_search_sweep.json]

Takes the last N photos of the sorted folder (256x256 crops) and reports, per (init, lr, steps), the
mean PSNR gain of the final image (after refinement) over the encoder's code at 256 bits.

The rate-distortion search's lambda (``--lambdas``, "none" = distortion only; init/lr/steps from the
first grid cell), reporting the real file's bpp (smallest coding) and PSNR, with the encoder's row:

    python recipes/codec_search_sweep.py --data-root ../shared/data/photos --n 3 --rate 128 \
        --grid 0.05,0.02,40 --lambdas "none 0.003 0.001 0.0003" --json results/codec_rd_search_sweep.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from megabit.codec.api import _to_tensor, coded_files, encode_bits_of, load_codec, reconstruct
from megabit.codec.metrics import psnr
from megabit.codec.search import SearchConfig, search_bits
from megabit.data.images import list_images, load_rgb, pad_to_multiple
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--data-root", required=True)
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--rate", type=int, default=256)
ap.add_argument("--model", default=None)
ap.add_argument("--crop", type=int, default=256, help="top-left crop side")
ap.add_argument("--grid", default="0.05,0.02,40 0.1,0.05,40 0.02,0.01,40 0.05,0.01,40 0.05,0.03,40 0.05,0.02,80")
ap.add_argument("--lambdas", default=None, help='rate-distortion sweep: e.g. "none 0.003 0.001 0.0003"')
ap.add_argument("--json", default=None)
ap.add_argument("--machine", default="2-core x86_64 CPU, 1 thread, shared with two other jobs")
a = ap.parse_args()
torch.set_num_threads(1)
c = load_codec(a.model)
imgs = [(f.name, load_rgb(f)[: a.crop, : a.crop]) for f in list_images(a.data_root)[-a.n:]]


def q(x, h, w):
    return x[0, :, :h, :w].round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)


base = {}
for name, img in imgs:
    bits, gh, gw = encode_bits_of(img, c, a.rate)
    base[name] = (bits, gh, gw, psnr(img, q(reconstruct(bits, gh, gw, a.rate, c), *img.shape[:2])))


def real_bpp(bits, gh, gw, img):
    h, w = img.shape[:2]
    return 8 * min(len(f) for f in coded_files(bits, gh, gw, c, w, h, 3, a.rate).values()) / (h * w)


rows = []
if a.lambdas:  # rate-distortion sweep
    init, lr, steps = a.grid.split()[0].split(",")
    enc_bpp = [real_bpp(*base[name][:3], img) for name, img in imgs]
    rows.append({"search": "none (encoder)", "bpp": round(float(np.mean(enc_bpp)), 4),
                 "psnr": round(float(np.mean([b[3] for b in base.values()])), 3)})
    print(json.dumps(rows[-1]), flush=True)
    for lam in a.lambdas.split():
        cfg = SearchConfig(steps=int(steps), lr=float(lr), init=float(init), lmbda=None if lam == "none" else float(lam))
        t0, bpp, ps = time.time(), [], []
        for name, img in imgs:
            bits, gh, gw, _ = base[name]
            nb = search_bits(c, _to_tensor(pad_to_multiple(img, 32)), bits, a.rate, cfg)
            bpp.append(real_bpp(nb, gh, gw, img))
            ps.append(psnr(img, q(reconstruct(nb, gh, gw, a.rate, c), *img.shape[:2])))
        rows.append({**cfg.to_dict(), "bpp": round(float(np.mean(bpp)), 4), "psnr": round(float(np.mean(ps)), 3),
                     "seconds": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
for cell in ([] if a.lambdas else a.grid.split()):
    init, lr, steps = cell.split(",")
    cfg = SearchConfig(steps=int(steps), lr=float(lr), init=float(init))
    t0, gains = time.time(), []
    for name, img in imgs:
        bits, gh, gw, p0 = base[name]
        nb = search_bits(c, _to_tensor(pad_to_multiple(img, 32)), bits, a.rate, cfg)
        gains.append(psnr(img, q(reconstruct(nb, gh, gw, a.rate, c), *img.shape[:2])) - p0)
    rows.append({**cfg.to_dict(), "gain_db": round(float(np.mean(gains)), 3), "per_image": [round(g, 2) for g in gains],
                 "seconds": round(time.time() - t0, 1)})
    print(json.dumps(rows[-1]), flush=True)
if a.json:
    atomic_write_text(a.json, json.dumps({"data": a.data_root, "images": [n for n, _ in imgs], "rate_bits": a.rate,
                                          "model": c.name, "command": " ".join(["python", *sys.argv]),
                                          "machine": a.machine,
                                          "rows": rows}, indent=1))
