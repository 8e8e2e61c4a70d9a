"""Experiment (not in the package): how much of the BN -> BSN conversion loss is the power-of-two layer scale?

    python recipes/nqe_bsn_mantissa.py RUN/qat/bn_end.pt --data-root ../shared/data/cifar10-jpeg-q75 \
        --mantissa-bits 0,1,2 --json results/nqe_bsn_mantissa.json

For each ``--mantissa-bits`` B, every layer's BSN scale becomes ``(1 + m / 2^B) * 2^-k`` with a per-layer
``m`` in ``0 .. 2^B - 1`` (B = 0 is the paper's layer-shared power of two; B > 0 would be a
shift-and-add, still multiplier-free, but it is **not** what megabit's BSN, integer path or file
format implement). Shift, mantissa and offsets are fitted layer by layer as in the fitted conversion
(``train-classifier --bsn-init fit``, MSE of the activation codes on ``--calib`` training images); the
fake-quantized test accuracy right after conversion (flip TTA) is reported, before any fine-tuning.
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
ap.add_argument("--mantissa-bits", default="0,2", help="comma-separated B values (0: the paper's power of two)")
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--json", default=None)
a = ap.parse_args()


def mantissa_bsn(bits: int):
    class MantissaBSN(BitShiftNorm):
        """BSN whose layer scale is (1 + m/2^bits) * 2^-k; the fit tries every m."""

        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.register_buffer("mant", torch.tensor(0))

        def factor(self) -> float:
            return 1.0 + float(self.mant) / (1 << bits)

        def forward(self, acc):
            return super().forward(acc * self.factor())

        def fit_(self, acc, target, codes_fn, shift_search=2, **kw):
            k0, best = int(self.shift), None
            for m in range(1 << bits):
                self.shift.fill_(k0)
                r = super().fit_(acc * (1.0 + m / (1 << bits)), target, codes_fn, shift_search, **kw)
                e = min(r["code_mse"].values())
                if best is None or e < best[0]:
                    best = (e, m, int(self.shift), self.offset.detach().clone(), r)
            _, m, k, off, r = best
            self.mant.fill_(m)
            self.shift.fill_(k)
            self.offset.copy_(off)
            return r | {"mantissa": m}

    return MantissaBSN


try:
    bits_list = [int(b) for b in a.mantissa_bits.split(",")]
    train = load_cifar10(a.data_root, "train", a.calib)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    base = load_classifier(a.model)
except (DataError, OSError, ValueError, KeyError) as e:
    sys.exit(f"nqe_bsn_mantissa: error: {e}")
if base.cfg.norm != "bn" or not base.cfg.quantize:
    sys.exit(f"nqe_bsn_mantissa: error: {a.model} is not a quantized BatchNorm-mode model")
base.eval()
res = {"model": a.model, "calib_images": a.calib, "bn_accuracy": evaluate(base, test)["accuracy"],
       "test_images": len(test.y), "data": "CIFAR-10 JPEG-q75 copy, flip TTA, fake-quant right after conversion",
       "arms": {}}
print(f"BN mode: {res['bn_accuracy']:.4f}", flush=True)
original = nqe.BitShiftNorm
for bits in bits_list:
    nqe.BitShiftNorm = mantissa_bsn(bits) if bits > 0 else original
    try:
        m = copy.deepcopy(base)
        t0 = time.time()
        m.convert_to_bsn(train.x[: a.calib])
        m.eval()
        r = {"accuracy": evaluate(m, test)["accuracy"], "shifts": [int(b.norm.shift) for b in m.blocks],
             "mantissas": [int(getattr(b.norm, "mant", 0)) for b in m.blocks], "s": round(time.time() - t0, 1)}
    finally:
        nqe.BitShiftNorm = original
    res["arms"][f"mantissa_bits={bits}"] = r
    print(f"mantissa bits {bits}: {r['accuracy']:.4f} shifts {r['shifts']} mantissas {r['mantissas']}", flush=True)
if a.json:
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.json, json.dumps(res, indent=2))
