"""Search cost of FMPQ's adaptive search vs the grid baseline (and exhaustive on a tiny problem).

Both read the same cached zeta table, so the cost is the number of Algorithm-1 evaluations; this
prints and saves iterations and wall time (median of ``--trials``) for several size targets, as
ratios grid / adaptive in the same run.

    python benchmarks/bench_fmpq_search.py [--sensitivity sens.json] --out results/fmpq_search_bench.json
Without ``--sensitivity`` a synthetic 14-layer table (the scale hyperprior's layer count) is used.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def synthetic_table(n_layers: int = 14, seed: int = 0):
    from megabit.search import LayerInfo, SensitivityTable

    rng = np.random.default_rng(seed)
    layers = [LayerInfo(f"l{i}", int(rng.integers(5_000, 200_000)), int(rng.integers(32, 192)), "Conv2d")
              for i in range(n_layers)]
    zeta = rng.uniform(0.5, 5.0, (n_layers, 1)) * 4.0 ** -np.arange(7)[None, :] * rng.uniform(0.7, 1.3, (n_layers, 7))
    return SensitivityTable(layers, list(range(2, 9)), zeta, 1.0, 0.01, {"synthetic": True, "seed": seed})


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sensitivity", default=None)
    p.add_argument("--targets", default="0.35,0.5,0.625,0.75,0.9", help="fractions of the all-8-bit size")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--grid-n", type=int, default=500)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch

    from megabit.search import SensitivityTable, adaptive_search, grid_search, size_bounds

    table = SensitivityTable.load(a.sensitivity) if a.sensitivity else synthetic_table()
    lo, hi = size_bounds(table)
    rows = []
    for frac in [float(f) for f in a.targets.split(",")]:
        target = frac * hi
        if target < lo:
            continue
        ta, tg = [], []
        for _ in range(a.trials):
            ra = adaptive_search(table, target)
            ta.append(ra.seconds)
            rg = grid_search(table, target, n=a.grid_n)
            tg.append(rg.seconds)
        row = {"target_fraction_of_8bit": frac, "target_bits": int(target),
               "adaptive": {"iterations": ra.iterations, "converged": ra.converged, "size_bits": ra.size_bits,
                            "median_s": statistics.median(ta)},
               "grid": {"iterations": rg.iterations, "converged": rg.converged, "size_bits": rg.size_bits,
                        "median_s": statistics.median(tg)}}
        row["time_ratio_grid_over_adaptive"] = row["grid"]["median_s"] / max(row["adaptive"]["median_s"], 1e-12)
        rows.append(row)
        print(f"target {frac:.3f} x 8-bit: adaptive {ra.iterations} it ({statistics.median(ta) * 1e3:.2f} ms, "
              f"converged={ra.converged}) vs grid {rg.iterations} it ({statistics.median(tg) * 1e3:.2f} ms) "
              f"-> x{row['time_ratio_grid_over_adaptive']:.1f}")
    res = {"benchmark": "fmpq_search", "machine": platform.platform(), "processor": platform.processor(),
           "python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__,
           "trials": a.trials, "table": a.sensitivity or "synthetic 14-layer", "n_layers": len(table.layers),
           "rows": rows, "source": Path(__file__).read_text()}
    if a.out:
        from megabit.utils import atomic_write_text

        atomic_write_text(a.out, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
