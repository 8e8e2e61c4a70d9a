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
    p.add_argument("--sensitivity", default=None, nargs="*", help="sensitivity JSON file(s); default: synthetic")
    p.add_argument("--targets", default="0.35,0.5,0.625,0.75,0.9", help="fractions of the all-8-bit size")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--grid-n", type=int, default=500)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch

    from megabit.search import SensitivityTable, adaptive_search, grid_search, plan_size_bits, size_bounds
    from megabit.search.allocate import uniform_bits

    tables = [(f, SensitivityTable.load(f)) for f in a.sensitivity] if a.sensitivity else [("synthetic 14-layer",
                                                                                          synthetic_table())]
    rows = []
    for name, table in tables:
        lo, hi = size_bounds(table)
        full8 = plan_size_bits(table.layers, uniform_bits(table, 8)) if 8 in table.bits else hi
        for frac in [float(f) for f in a.targets.split(",")]:
            target = frac * full8
            if target < lo:
                continue
            runs = {"adaptive": lambda: adaptive_search(table, target),
                    "adaptive-log": lambda: adaptive_search(table, target, bracket="log"),
                    "grid": lambda: grid_search(table, target, n=a.grid_n)}
            row = {"table": name, "n_layers": len(table.layers), "target_fraction_of_8bit": frac,
                   "target_bits": int(target)}
            for k, fn in runs.items():
                ts = []
                for _ in range(a.trials):
                    r = fn()
                    ts.append(r.seconds)
                row[k] = {"iterations": r.iterations, "converged": r.converged, "size_bits": r.size_bits,
                          "median_s": statistics.median(ts)}
            row["time_ratio_grid_over_adaptive"] = row["grid"]["median_s"] / max(row["adaptive"]["median_s"], 1e-12)
            rows.append(row)
            print(f"{Path(name).parent.name or name} target {frac:.3f} x 8-bit: adaptive {row['adaptive']['iterations']} it "
                  f"(converged={row['adaptive']['converged']}), adaptive-log {row['adaptive-log']['iterations']} it, "
                  f"grid {row['grid']['iterations']} it -> time x{row['time_ratio_grid_over_adaptive']:.1f}")
    res = {"benchmark": "fmpq_search", "machine": platform.platform(), "processor": platform.processor(),
           "python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__,
           "trials": a.trials, "tables": [t[0] for t in tables], "rows": rows, "source": Path(__file__).read_text()}
    if a.out:
        from megabit.utils import atomic_write_text

        atomic_write_text(a.out, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
