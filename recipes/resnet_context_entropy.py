"""Study: would context-conditioned tables code a Table-I ResNet's weights below their layer entropy?

Measures, per quantized body conv of a trained ``recipes/resnet_table1.py`` model (model.pt, run
dir, .mbit or a checkpoint.pt), the zero-order entropy the shipped coder approaches (one frequency
table per layer) against static context models a LUT decoder could switch between:

* ``prev2``: two tables per layer, chosen by whether the previous code (row-major order) is the
  zero level; cost = conditional entropy + one extra table (``--table-bits`` per level);
* ``kernel_flag``: one bit-flag per 3x3 kernel "all zero" (coded at its entropy) + the codes of
  the non-zero kernels under their own table;
* ``prev_ideal``: the entropy given the previous code's exact value, no table cost (a bound).

Nothing here is shipped in the ``.mbit`` format: it says whether a context coder is worth building.

    python recipes/resnet_context_entropy.py runs/t16m/mixed-entropy --json results/resnet_context_entropy.json
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from megabit.hub import load_resnet
from megabit.models.resnet import ResNet, ResNetConfig, quantized_layers
from megabit.utils import atomic_write_text


def _H(counts) -> float:
    c = np.asarray(counts, float)
    c = c[c > 0]
    return float(-(c * np.log2(c / c.sum())).sum())


def _counts(a) -> np.ndarray:
    return np.unique(a, return_counts=True)[1]


def layer_costs(codes: np.ndarray, levels: int, table_bits: int) -> dict:
    """Total bits of one layer's codes (O, I, kh, kw) under each model."""
    seq = codes.reshape(-1)
    zero = int(np.bincount(seq - seq.min()).argmax()) + int(seq.min())
    prev = np.concatenate([[zero], seq[:-1]])
    nz = prev != zero
    kern = codes.reshape(-1, codes.shape[2] * codes.shape[3])
    kz = (kern == zero).all(1)
    return {
        "n": int(seq.size),
        "zero_order": _H(_counts(seq)),
        "prev2": _H(_counts(seq[nz])) + _H(_counts(seq[~nz])) + levels * table_bits,
        "kernel_flag": _H(np.bincount(kz.astype(int), minlength=2)) + _H(_counts(kern[~kz])) + 2 * table_bits,
        "prev_ideal": sum(_H(_counts(seq[prev == s])) for s in np.unique(prev)),
        "zero_kernels": float(kz.mean()),
        "zero_kernels_if_iid": float((seq == zero).mean() ** kern.shape[1]),
    }


def load_any(spec: str) -> ResNet:
    m = load_resnet(spec)
    if m is not None:
        return m
    ck = torch.load(spec, map_location="cpu", weights_only=False)  # a training checkpoint.pt
    m = ResNet(ResNetConfig.from_dict(ck["config"]))
    m.load_state_dict(ck["model"])
    return m.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="model.pt, run dir, .mbit or checkpoint.pt of recipes/resnet_table1.py")
    ap.add_argument("--table-bits", type=int, default=12, help="bits per level of one extra frequency table")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    model = load_any(a.model)
    rows, tot = [], {}
    for name, mod in quantized_layers(model, include_edges=False):
        with torch.no_grad():
            codes = mod.quant.codes(mod.weight.float()).round().numpy().astype(np.int64)
        r = {"name": name, "levels": mod.quant.spec.levels, **layer_costs(codes, mod.quant.spec.levels, a.table_bits)}
        rows.append(r)
        for k in ("n", "zero_order", "prev2", "kernel_flag", "prev_ideal"):
            tot[k] = tot.get(k, 0) + r[k]
        print(f"{name:18s} L={r['levels']:2d} H0 {r['zero_order'] / r['n']:.3f}  prev2 {r['prev2'] / r['n']:.3f}  "
              f"kernel-flag {r['kernel_flag'] / r['n']:.3f}  prev-ideal {r['prev_ideal'] / r['n']:.3f}  "
              f"zero kernels {r['zero_kernels']:.2f} (iid {r['zero_kernels_if_iid']:.2f})")
    bpw = {k: tot[k] / tot["n"] for k in ("zero_order", "prev2", "kernel_flag", "prev_ideal")}
    print("body bits/weight: " + ", ".join(f"{k} {v:.4f} ({100 * (v / bpw['zero_order'] - 1):+.1f} %)" for k, v in bpw.items()))
    if a.json:
        atomic_write_text(a.json, json.dumps({"model": a.model, "command": "python " + " ".join(sys.argv),
                                              "table_bits": a.table_bits, "body_bits_per_weight": bpw, "layers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
