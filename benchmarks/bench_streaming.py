"""Decode-at-inference: memory and time of the streaming `.mbit` path vs decode-everything-first.

    python benchmarks/bench_streaming.py [--model nqe-1mbit] [--coders tans rans raw] [--n 64] [--trials 3]

For the bundled classifier packed with each coder, on ``--n`` bundled CIFAR-10 test images in one
batch: ``StreamingIntegerNQE`` (decodes one layer right before use, drops it after) against the anchor
``mbit_to_integer`` + forward (every layer decoded first). Reports the accounted peak of decoded
weight bytes, the tracemalloc peak of Python/numpy allocations (torch tensors not traced), the
median wall time per batch and the ratio streaming / anchor, and checks that the logits are equal.
Saves results/bench_streaming.json with the machine and versions.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from megabit.data import load_cifar10
from megabit.export.streaming import peak_memory
from megabit.fmt.mbit import encode_mbit, mbit_to_integer, read_mbit
from megabit.hub import DEFAULT_CLASSIFIER, bundled_classifier_path, sample_cifar_path
from megabit.utils import atomic_write_text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_CLASSIFIER)
    ap.add_argument("--coders", nargs="+", default=["tans", "rans", "raw"])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out", default="results/bench_streaming.json")
    a = ap.parse_args(argv)
    src = bundled_classifier_path(a.model)
    if src is None:
        sys.exit(f"bench_streaming: error: no bundled model {a.model!r}")
    f0 = read_mbit(src)
    net = mbit_to_integer(f0)
    x = load_cifar10(sample_cifar_path(), "test").x[: a.n]
    rows = {}
    for coder in a.coders:
        data = encode_mbit(net, coder=coder)
        f = read_mbit(data)
        res = {}
        for streaming in (True, False):
            times = []
            for _ in range(a.trials):
                t = time.perf_counter()
                r = peak_memory(f, x, streaming=streaming)
                times.append(time.perf_counter() - t)
            res["streaming" if streaming else "decode_all"] = {
                "peak_decoded_bytes": r["peak_decoded_bytes"], "tracemalloc_peak_bytes": r["tracemalloc_peak_bytes"],
                "median_s_per_batch": round(statistics.median(times), 4), "logits": r["logits"]}
        s, d = res["streaming"], res["decode_all"]
        same = bool(torch.equal(s.pop("logits"), d.pop("logits")))
        rows[coder] = {"file_bytes": len(data), **res, "logits_equal": same,
                       "ratio_peak_decoded": round(s["peak_decoded_bytes"] / d["peak_decoded_bytes"], 4),
                       "ratio_tracemalloc_peak": round(s["tracemalloc_peak_bytes"] / d["tracemalloc_peak_bytes"], 4),
                       "ratio_time": round(s["median_s_per_batch"] / d["median_s_per_batch"], 3)}
        print(coder, json.dumps(rows[coder]))
    out = {"what": __doc__.split("\n\n")[0], "model": a.model, "batch": a.n, "trials": a.trials,
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                       "threads": torch.get_num_threads()},
           "coders": rows, "command": " ".join(["python", *sys.argv])}
    atomic_write_text(a.out, json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
