"""Recipe: what rate the refinement should see in an adaptive-rate file (training photos only).

    python recipes/codec_adaptive_refine_ablation.py --data-root ../shared/data/photos --n 8 \\
        [--json results/codec_adaptive_refine_ablation.json]

The last N photos of the sorted folder, each allocated (:func:`megabit.codec.ratecontrol.choose_levels`)
at the context model's estimated cost of the fixed 256-bit code; the mixed code is decoded by g_s as
shipped, then refined with (a) the mean of the patch rates (what ``reconstruct`` does), (b) a
per-patch rate map (the refinement's rate input upsampled, which training never showed it), and
compared with (c) the fixed 256-bit code. Reports PSNR and blockiness (means).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

from megabit.codec.api import load_codec, reconstruct
from megabit.codec.evaluate import machine_info
from megabit.codec.metrics import blockiness, psnr
from megabit.codec.ratecontrol import AdaptiveCoder, choose_levels
from megabit.data.images import list_images, load_rgb
from megabit.models.patch_codec import unpatchify
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--data-root", required=True)
ap.add_argument("--n", type=int, default=8)
ap.add_argument("--model", default=None)
ap.add_argument("--json", default=None)
a = ap.parse_args()
try:
    codec = load_codec(a.model)
    files = list_images(a.data_root)[-a.n :]
except ValueError as e:
    sys.exit(f"error: {e}")
m = codec.model


def refine_with_map(xp: torch.Tensor, pr: np.ndarray, gh: int, gw: int) -> torch.Tensor:
    R = m.refine
    n, _, h, w = xp.shape
    pos = F.pixel_unshuffle(R.position(h, w).expand(n, -1, -1, -1), 2)
    rmap = torch.from_numpy(pr.astype(np.float32) / m.cfg.max_bits).reshape(1, 1, gh, gw)
    r = F.interpolate(rmap, scale_factor=16, mode="nearest")
    y = R.out(R.blocks(F.gelu(R.inp(torch.cat([F.pixel_unshuffle(xp - 0.5, 2), pos, r], 1)))))
    return xp + F.pixel_shuffle(y, 2)


rows = {"mean_rate": [], "rate_map": [], "fixed_256": []}
with torch.no_grad():
    for f in files:
        img = load_rgb(f)
        H, W = img.shape[:2]
        q = lambda x: x[0, :, :H, :W].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()  # noqa: E731
        co = AdaptiveCoder.prepare(img, codec)
        pr = np.asarray(co.rates)[choose_levels(co.D, co.R, co.R[co.rates.index(256)].sum())]
        bits = co.assemble(pr)
        outs = {"mean_rate": q(reconstruct(bits, co.gh, co.gw, int(pr.max()), codec, patch_rates=pr)),
                "fixed_256": q(reconstruct(co.bits[256], co.gh, co.gw, 256, codec))}
        codes = m.codes_from_bits(torch.from_numpy(bits[:, : int(pr.max())]), int(pr.max()))
        xp = unpatchify(m.decode_patches(codes, torch.as_tensor(pr), (1, co.gh, co.gw)), 1, co.gh, co.gw)
        outs["rate_map"] = q(refine_with_map(xp, pr, co.gh, co.gw) * 255)
        for k, x in outs.items():
            rows[k].append({"image": f.name, "psnr": psnr(img, x), "blockiness": blockiness(x)})
out = {"data_root": a.data_root, "images": [f.name for f in files], "model": codec.name,
       "command": " ".join(["python", *sys.argv]), "machine": machine_info(),
       "mean": {k: {q: float(np.mean([r[q] for r in v])) for q in ("psnr", "blockiness")} for k, v in rows.items()},
       "per_image": rows}
for k, v in out["mean"].items():
    print(f"{k:10s} PSNR {v['psnr']:.3f} dB  blockiness {v['blockiness']:.3f}")
if a.json:
    atomic_write_text(a.json, json.dumps(out, indent=1))
