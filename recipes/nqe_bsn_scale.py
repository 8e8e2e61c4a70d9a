"""Recipe: how much of the BN -> BSN conversion loss is the scale? (no training)

    python recipes/nqe_bsn_scale.py RUN/qat/bn_end.pt --data-root ../shared/data/cifar10-jpeg-q75 \
        --arms layer:0,layer:1,layer:2,channel:0,channel:1,channel:2,channel-float --json results/nqe_bsn_scale_s33_hr.json

``--samples S --sample-seeds 0,1,2``: the fit sees S positions per channel, drawn three times (the spread is the
conversion's sampling noise; session 37).

Each arm converts the same BN-phase model with the fitted conversion (``train-classifier --bsn-init fit``: MSE
of the activation codes on ``--calib`` training images) into a BSN of another scale, and reports the
fake-quantized test accuracy right after conversion (flip TTA), before any fine-tuning:

* ``layer:B``: one scale per layer, ``(1 + m/2^B) 2^-k``; ``layer:0`` is the paper's layer-shared power of two;
* ``channel:B``: one such scale per channel ([I] beyond the paper; ``train-classifier --bsn-scale channel
  --bsn-mantissa-bits B``, same integer path and file format);
* ``channel-float``: the bound, not a storable BSN: each channel keeps its BN scale ``|γ_c/σ_c|`` exactly (a
  float factor) and only the offsets are fitted.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import megabit.models.nqe as nqe
from megabit.data import load_cifar10
from megabit.data.cifar import DataError
from megabit.norm.bsn import BitShiftNorm
from megabit.train.classifier import evaluate, load_classifier
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("model", help="a quantized BN-mode classifier model.pt (train-classifier's bn_end.pt)")
ap.add_argument("--data-root", required=True)
ap.add_argument("--calib", type=int, default=1000)
ap.add_argument("--samples", type=int, default=4096, help="positions per channel the fit sees (drawn from all of the "
                                                           "calibration images' positions)")
ap.add_argument("--sample-seeds", default="0", help="comma list: convert each arm once per seed of that draw (the "
                                                    "spread of the results is the conversion's sampling noise)")
ap.add_argument("--arms", default="layer:0,channel:1,channel-float")
ap.add_argument("--offset-bits", type=int, default=None, help="BSN offset width (default: the model's)")
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--json", default=None)
ap.add_argument("--save-dir", default=None, help="also save each storable arm's converted model as DIR/ARM.pt "
                                                  "(a BSN-mode classifier: megabit pack / eval-classifier take it)")
a = ap.parse_args()


class ChannelFloatBSN(BitShiftNorm):
    """The bound: BSN times a per-channel float factor |a_c| 2^k (the BN scale kept exactly)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.register_buffer("factor", torch.ones(self.channels))

    @torch.no_grad()
    def init_from_batchnorm(self, bn, quantile=0.9):
        sign = super().init_from_batchnorm(bn, quantile)
        a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()
        self.factor.copy_(a * 2.0 ** int(self.shift))
        return sign

    def forward(self, acc):
        return super().forward(acc * self.factor.reshape(1, -1, 1, 1).to(acc.dtype))

    def fit_(self, acc, target, codes_fn, shift_search=2, **kw):
        return super().fit_(acc * self.factor[:, None], target, codes_fn, 0, **kw)


def parse_arm(s: str) -> dict:
    if s == "channel-float":
        return {}
    gran, _, bits = s.partition(":")
    if gran not in ("layer", "channel") or not bits.isdigit() or not 0 <= int(bits) <= 3:
        raise ValueError(f"arm {s!r}: expected layer:B, channel:B (B 0..3) or channel-float")
    return {"bsn_granularity": gran, "bsn_mantissa_bits": int(bits)}


try:
    arms = {s: parse_arm(s) for s in a.arms.split(",") if s}
    seeds = [int(v) for v in a.sample_seeds.split(",") if v.strip()]
    if not seeds or a.samples < 1 or a.calib < 1:
        raise ValueError("--sample-seeds needs at least one integer, --samples and --calib must be >= 1")
    train = load_cifar10(a.data_root, "train", a.calib)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    base = load_classifier(a.model)
except (DataError, OSError, ValueError, KeyError) as e:
    sys.exit(f"nqe_bsn_scale: error: {e}")
if base.cfg.norm != "bn" or not base.cfg.quantize:
    sys.exit(f"nqe_bsn_scale: error: {a.model} is not a quantized BatchNorm-mode model")
base.eval()
res = {"model": a.model, "calib_images": a.calib, "samples": a.samples, "sample_seeds": seeds, "bn_accuracy": evaluate(base, test)["accuracy"],
       "test_images": len(test.y), "data": "CIFAR-10 JPEG-q75 copy, flip TTA, fake-quant right after conversion",
       "arms": {}}
print(f"BN mode: {res['bn_accuracy']:.4f}", flush=True)
original = nqe.BitShiftNorm
extra = {"offset_bits": a.offset_bits} if a.offset_bits else {}
for (arm, fields), seed in ((kv, sd) for kv in arms.items() for sd in seeds):
    name = arm if len(seeds) == 1 else f"{arm}@seed{seed}"
    nqe.BitShiftNorm = ChannelFloatBSN if not fields else original
    try:
        m = copy.deepcopy(base)
        t0 = time.time()
        m.convert_to_bsn(train.x[: a.calib], samples=a.samples, sample_seed=seed, **fields, **extra)
        m.eval()
        r = {"accuracy": evaluate(m, test)["accuracy"], "convert_s": round(time.time() - t0, 1),
             "shifts": [b.norm.shift.tolist() for b in m.blocks], "mantissas": [b.norm.mant.tolist() for b in m.blocks]}
        if fields:
            from megabit.export import budget_table

            r["total_bits"] = budget_table(m.cfg)["total_bits"]
    finally:
        nqe.BitShiftNorm = original
    if a.save_dir and fields:
        from megabit.train.classifier import save_classifier

        Path(a.save_dir).mkdir(parents=True, exist_ok=True)
        r["saved"] = str(Path(a.save_dir) / f"{name.replace(':', '-').replace('@', '-')}.pt")
        save_classifier(m, r["saved"])
    res["arms"][name] = r
    print(f"{name}: {r['accuracy']:.4f} total bits {r.get('total_bits')}", flush=True)
if a.json:
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.json, json.dumps(res, indent=2))
