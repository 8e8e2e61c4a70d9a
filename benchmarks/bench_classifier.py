"""Classifier throughput on this machine: training (img/s) and inference, fake-quant vs integer.

    python benchmarks/bench_classifier.py [--model nqe-1mbit] [--n 1000] [--trials 3]

Anchors, each measured in the same run: the fake-quant PyTorch model in fp32 for the integer
path; eager training for compiled training; the BN phase's compiled training for the BSN phase's. Saves results/bench_classifier.json with machine, versions, trials,
medians, and this script's source.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from megabit.export import IntegerNQE
from megabit.hub import resolve_classifier, sample_cifar_path
from megabit.data import load_cifar10
from megabit.models import NQE, get_preset


def timed(fn, trials):
    fn()  # warm-up
    ts = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="nqe-1mbit")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--out", default="results/bench_classifier.json")
    a = ap.parse_args()
    model, src = resolve_classifier(a.model)
    x = load_cifar10(sample_cifar_path(), "test").x[: a.n]
    net = IntegerNQE.from_model(model)
    res = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                       "python": sys.version.split()[0], "torch": torch.__version__},
           "model": src, "n_images": len(x), "trials": a.trials}

    with torch.no_grad():
        t_fq, _ = timed(lambda: model(x), a.trials)
        t_int, _ = timed(lambda: net(x), a.trials)
    res["infer_fake_quant_img_s"] = len(x) / t_fq
    res["infer_integer_img_s"] = len(x) / t_int
    res["integer_vs_fake_quant_ratio"] = t_fq / t_int

    # training throughput of the QAT graph in both phases (BN, then BSN), eager vs compiled, bf16 + channels_last
    xb = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, 10, (256,))
    for phase in ("bn", "bsn"):
        for compiled in (False, True):
            m = NQE(get_preset("nqe-1mbit")).train()
            if phase == "bsn":
                m(xb[:64])  # BN statistics and quantizer steps, then the conversion
                m.convert_to_bsn().train()
            m = m.to(memory_format=torch.channels_last)
            f = torch.compile(m) if compiled else m
            opt = torch.optim.AdamW(m.parameters(), 1e-3)

            def step():
                for _ in range(a.train_steps):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        out = f(xb)
                    loss = F.cross_entropy(out.float(), yb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            step()  # compile / warm-up
            t, _ = timed(step, a.trials)
            key = "train" if phase == "bn" else "train_bsn"  # "train_*": the BN-phase keys of earlier runs
            res[f"{key}_{'compiled' if compiled else 'eager'}_img_s"] = 256 * a.train_steps / t
    res["train_compiled_vs_eager_ratio"] = res["train_compiled_img_s"] / res["train_eager_img_s"]
    res["train_bsn_vs_bn_compiled_ratio"] = res["train_bsn_compiled_img_s"] / res["train_compiled_img_s"]
    res["source"] = Path(__file__).read_text()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    for k, v in res.items():
        if k not in ("source", "machine"):
            print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
