"""How far below 1 Mbit does the 1-Mbit NQE classifier go with ANS-coded weights, at unchanged accuracy?

    python recipes/nqe_ans_study.py [--model nqe-1mbit] [--data-root ../shared/data/cifar10-jpeg-q75]

Packs the model with raw bit-packing, tANS and rANS (several table sizes and stream counts), checks
that every file decodes to exactly the same integer weights (so accuracy is unchanged by
construction), evaluates the packed tANS file once on the test set, and writes
results/nqe_1mbit_ans.json.
"""
import argparse
import json
import platform

import numpy as np
import torch

from megabit.export import IntegerNQE, budget_table
from megabit.fmt.mbit import encode_mbit, inspect_mbit, mbit_to_integer, mbit_to_model, read_mbit
from megabit.hub import resolve_classifier
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="nqe-1mbit")
ap.add_argument("--data-root", default=None)
ap.add_argument("--out", default="results/nqe_1mbit_ans.json")
a = ap.parse_args()
model, src = resolve_classifier(a.model)
net = IntegerNQE.from_model(model)
rows = []
for coder, tl, k in [("raw", None, 1), ("tans", 8, 1), ("tans", 10, 1), ("tans", 12, 1), ("tans", 10, 8), ("tans", 10, 32),
                     ("rans", 12, 1), ("rans", 12, 8)]:
    data = encode_mbit(net, coder=coder, table_log=tl, n_streams=k)
    f = read_mbit(data)
    dec = mbit_to_integer(f)
    same = all(np.array_equal(x.codes, y.codes) for x, y in zip(net.layers, dec.layers)) and np.array_equal(net.head.codes, dec.head.codes)
    ins = inspect_mbit(f)
    rows.append({"coder": coder, "table_log": tl, "streams": k, "file_bytes": len(data), "total_bits": 8 * len(data),
                 "fraction_of_1mbit": 8 * len(data) / (1 << 20), "weight_bits_per_weight": ins["bits_per_weight"],
                 "table_bytes": ins["table_bytes"], "header_bytes": ins["header_bytes"], "bit_exact": bool(same),
                 "layers": [{k2: r[k2] for k2 in ("name", "levels", "entropy_bits_per_weight", "bits_per_weight", "table_bytes")} for r in ins["layers"]]})
    print(f"{coder:>4} log={tl} K={k}: {len(data):,} B = {8 * len(data) / (1 << 20):.3f} Mbit, {ins['bits_per_weight']:.4f} b/w, exact={same}")
out = {"model": src, "raw_budget_bits": budget_table(model.cfg)["total_bits"], "rows": rows,
       "machine": {"platform": platform.platform(), "torch": torch.__version__}}
if a.data_root:
    from megabit.data import load_cifar10
    from megabit.train.classifier import evaluate

    test = load_cifar10(a.data_root, "test")
    best = min((r for r in rows if r["coder"] == "tans"), key=lambda r: r["file_bytes"])
    packed = mbit_to_model(encode_mbit(net, coder="tans", table_log=best["table_log"], n_streams=best["streams"]))
    out["accuracy_unpacked"] = evaluate(model, test)["accuracy"]
    out["accuracy_packed_tans"] = evaluate(packed, test)["accuracy"]
    out["data"] = test.source + " (JPEG q75 copy of CIFAR-10), flip TTA"
    print("accuracy unpacked", out["accuracy_unpacked"], "packed", out["accuracy_packed_tans"])
atomic_write_text(a.out, json.dumps(out, indent=2))
