"""Fit the causal context model (second stage v2) of a patch codec on training photos.

The codec itself is unchanged (same encoder, same bits, same model hash): this only learns how to
code its bits more tightly (``megabit.codec.context_model``). The last ``--holdout`` photos (sorted
by name) are not used for fitting; the bits per code bit on them are reported for this model, the
per-patch checkerboard table of the first second stage, and uniform (raw) coding, and every held-out
image is really encoded and decoded (exact round trip checked; payload bytes reported).

    python recipes/codec_fit_context.py --data-root ../shared/data/photos \
        --out src/megabit/assets/codec-nested-v3.ctx.npz --json results/codec_context_model.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from megabit.codec import context_model as cmod
from megabit.codec import entropy_model as em
from megabit.codec.api import load_codec
from megabit.data.images import load_folder
from megabit.utils import atomic_write_bytes, atomic_write_text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="training photos (same-size crops), never Kodak/CLIC")
    p.add_argument("--model", default=None, help="bundled codec name or model.pt (default: the bundled default)")
    p.add_argument("--out", required=True, help="context model file to write (.ctx.npz)")
    p.add_argument("--json", default=None, help="results JSON")
    p.add_argument("--holdout", type=int, default=80)
    p.add_argument("--kernel", type=int, default=cmod.CtxConfig.kernel)
    p.add_argument("--iters", type=int, default=cmod.CtxConfig.iters)
    p.add_argument("--hidden", type=int, default=cmod.CtxConfig.hidden, help="ReLU units per channel (0 = linear)")
    p.add_argument("--fit-limit", type=int, default=None, help="fit on the first N non-held-out photos only")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        codec = load_codec(a.model)
        imgs = load_folder(a.data_root)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not 0 < a.holdout < len(imgs):
        print(f"error: --holdout must be in [1, {len(imgs) - 1}]", file=sys.stderr)
        return 2
    t0 = time.time()
    R = codec.model.cfg.max_bits
    maps, grids, all_bits = [], [], []
    for i in range(len(imgs)):
        x = imgs[i : i + 1].float()
        gh, gw = x.shape[2] // 32, x.shape[3] // 32
        bits = codec.model.compress(x[:, :, : gh * 32, : gw * 32], R).numpy()
        all_bits.append(bits)
        grids.append((gh, gw))
        maps.append((cmod.code_map(bits, gh, gw) > 0).astype(np.uint8))
    n_fit = len(imgs) - a.holdout
    cfg = cmod.CtxConfig(kernel=a.kernel, iters=a.iters, hidden=a.hidden)
    n_fit_used = min(n_fit, a.fit_limit or n_fit)
    cm = cmod.fit(np.stack(maps[:n_fit_used]), cfg, progress=True)
    atomic_write_bytes(a.out, cm.to_bytes())
    res = {"rates": {}}
    for rate in codec.model.cfg.rates:
        n_bits = ctx_ideal = tab_ideal = ctx_bytes = tab_bytes = 0
        for bits, (gh, gw) in zip(all_bits[n_fit:], grids[n_fit:]):
            b = bits[:, :rate]
            n_bits += b.size
            ctx_ideal += cmod.ideal_bits(b, gh, gw, cm)
            tab_ideal += em.ideal_bits(b, gh, gw, codec.bit_probs)
            blob = cmod.encode(b, gh, gw, cm)
            if not (cmod.decode(blob, gh, gw, rate, cm) == b).all():
                raise SystemExit("round trip failed")
            ctx_bytes += len(blob)
            tab_bytes += len(em.encode_bits(b, gh, gw, codec.bit_probs))
        res["rates"][str(rate)] = {
            "code_bits": n_bits,
            "ctx_ideal_bits_per_bit": round(ctx_ideal / n_bits, 4),
            "ctx_payload_bits_per_bit": round(8 * ctx_bytes / n_bits, 4),
            "table_ideal_bits_per_bit": round(tab_ideal / n_bits, 4),
            "table_payload_bits_per_bit": round(8 * tab_bytes / n_bits, 4),
        }
        print(rate, res["rates"][str(rate)], flush=True)
    res.update({
        "what": "second stage v2: causal linear context model over the code map, fitted on training photos",
        "model": codec.name, "model_hash": codec.model_hash.hex(), "ctx_digest": cm.digest().hex(),
        "data": a.data_root, "n_fit": n_fit_used, "n_holdout": a.holdout,
        "config": asdict(cfg), "ctx_file": a.out, "ctx_file_bytes": Path(a.out).stat().st_size,
        "stored_values": int(np.count_nonzero(cmod.causal_mask(cm.channels, cm.kernel)) * (1 + cm.hidden)
                             + cm.bias.size + cm.f1.size + 2 * cm.channels * cm.hidden),
        "seconds": round(time.time() - t0, 1),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "command": "python recipes/codec_fit_context.py " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    if a.json:
        atomic_write_text(a.json, json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
