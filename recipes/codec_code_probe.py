"""Probe: how much of a patch a codec's binary code carries, with a *linear* least-squares decoder.

For the patch codes of a codec (default: the bundled ``codec-nested``) on training photos, fit
``patch ~ W [bits, 1]`` on 80 % of the patches and report the PSNR on the other 20 %, at each rate;
the same for the signs of random projections of the (mean-removed) patches (random hyperplane
hashing: a code that no training went into) and for the mean patch. Run it to see whether the
encoder or the decoder limits a codec: if the learned code is barely more linearly decodable than
random hyperplanes, training the decoder alone cannot fix it.

    python recipes/codec_code_probe.py --data-root ../shared/data/photos --images 160 \
        --out results/codec_code_probe.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from megabit.codec.api import load_codec
from megabit.data.images import load_folder
from megabit.models.patch_codec import patchify
from megabit.utils import atomic_write_text


def psnr(mse: float) -> float:
    return float(10 * np.log10(255.0**2 / mse))


def linear_psnr(F: np.ndarray, X: np.ndarray, n_train: int, rates) -> dict:
    out = {}
    for r in rates:
        A = np.concatenate([F[:, :r], np.ones((len(F), 1))], 1)
        W, *_ = np.linalg.lstsq(A[:n_train], X[:n_train], rcond=None)
        out[str(r)] = round(psnr(float(((A[n_train:] @ W - X[n_train:]) ** 2).mean())), 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="training photos (never Kodak/CLIC)")
    ap.add_argument("--model", default=None, help="bundled codec name or model.pt (default: codec-nested-v3)")
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    codec = load_codec(a.model)
    m = codec.model.eval()
    imgs = load_folder(a.data_root, limit=a.images)
    h, w = imgs.shape[2] // 32 * 32, imgs.shape[3] // 32 * 32
    R = m.cfg.max_bits
    X, B = [], []
    for i in range(imgs.shape[0]):
        x = imgs[i : i + 1, :, :h, :w].float()
        B.append(m.compress(x, R).numpy())
        X.append(patchify(x).reshape(-1, 3 * 32 * 32).numpy())
    X = np.concatenate(X).astype(np.float64)
    B = np.concatenate(B).astype(np.float64) * 2 - 1
    n_train = int(0.8 * len(X))
    rates = list(m.cfg.rates)
    rng = np.random.default_rng(a.seed)
    Xc = X - X[:n_train].mean(0)
    rand = np.sign(Xc @ rng.standard_normal((X.shape[1], R)))
    p = (B[:n_train] > 0).mean(0)
    H = -(p * np.log2(np.clip(p, 1e-12, 1)) + (1 - p) * np.log2(np.clip(1 - p, 1e-12, 1)))
    res = {
        "what": "linear least-squares decoding of 32x32 patches from their binary codes (80/20 split of the patches)",
        "model": codec.name, "data": str(a.data_root), "images": int(imgs.shape[0]), "patches": int(len(X)),
        "learned_code_psnr": linear_psnr(B, X, n_train, rates),
        "random_hyperplane_code_psnr": linear_psnr(rand, X, n_train, rates),
        "mean_patch_psnr": round(psnr(float(((X[n_train:] - X[:n_train].mean(0)) ** 2).mean())), 3),
        "learned_code_mean_bit_entropy": {str(r): round(float(H[:r].mean()), 4) for r in rates},
        "seconds": round(time.time() - t0, 1), "machine": platform.platform(), "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps(res, indent=1))
    if a.out:
        atomic_write_text(a.out, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
