#!/usr/bin/env python
"""Benchmark megabit.entropy (tANS K=1/8/32, rANS) against constriction's AnsCoder.

For weight-like sources (discretized Laplace / Gaussian with 3, 5, 7, 15
symbols) all coders run on the *same* symbols in the same process:

* encode / decode throughput in Msymbols/s (median of ``--trials`` runs after
  a warm-up that also triggers numba compilation),
* coded size relative to the empirical entropy of the symbols (payload only,
  and payload + serialized frequency table), table bytes separately,
* the tANS table-size trade-off: table_log 6..12 -> overhead over entropy vs
  decode-LUT bytes (4 * 2**table_log),
* ratios against constriction (``constriction.stream.stack.AnsCoder`` with
  ``constriction.stream.model.Categorical(probs, perfect=False)``).

Usage::

    python benchmarks/bench_entropy.py            # 1M symbols, 5 trials
    python benchmarks/bench_entropy.py --quick    # 200k symbols, 3 trials

Writes ``results/bench_entropy.json`` (override with ``--out``).
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

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from megabit.entropy import (  # noqa: E402
    _common,
    entropy_bits,
    freqs_to_bytes,
    quantize_frequencies,
    rans,
    tans,
)

try:  # noqa: SIM105
    import constriction
except Exception:  # pragma: no cover
    constriction = None


def make_sources(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Weight-like symbol streams: round(noise) clipped to +-(m//2), shifted to 0..m-1."""
    rng = np.random.default_rng(seed)

    def disc(x, m):
        h = m // 2
        return (np.clip(np.round(x), -h, h).astype(np.int64) + h).astype(np.uint8)

    return {
        "laplace3": disc(rng.laplace(0.0, 0.45, n), 3),
        "laplace5": disc(rng.laplace(0.0, 0.7, n), 5),
        "gauss7": disc(rng.normal(0.0, 1.0, n), 7),
        "laplace15": disc(rng.laplace(0.0, 1.6, n), 15),
    }


def timeit(fn, trials: int) -> tuple[float, list[float]]:
    ts = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def bench_megabit(coder, x, freqs, log, k, trials):
    payload = coder.encode(x, freqs, log, k)  # warm-up (and numba compile)
    y = coder.decode(payload, freqs, log, x.size, k)
    assert np.array_equal(x, y), "round trip failed"
    t_enc, _ = timeit(lambda: coder.encode(x, freqs, log, k), trials)
    t_dec, _ = timeit(lambda: coder.decode(payload, freqs, log, x.size, k), trials)
    return len(payload), t_enc, t_dec


def bench_constriction(x, counts, trials):
    probs = (counts / counts.sum()).astype(np.float64)
    model = constriction.stream.model.Categorical(probs, perfect=False)
    xs = x.astype(np.int32)

    def enc():
        c = constriction.stream.stack.AnsCoder()
        c.encode_reverse(xs, model)
        return c.get_compressed()

    comp = enc()
    d = constriction.stream.stack.AnsCoder(comp)
    assert np.array_equal(d.decode(model, xs.size), xs), "constriction round trip failed"
    t_enc, _ = timeit(enc, trials)
    t_dec, _ = timeit(lambda: constriction.stream.stack.AnsCoder(comp).decode(model, xs.size), trials)
    return int(comp.nbytes), t_enc, t_dec


def versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import numba

        out["numba"] = numba.__version__
    except Exception:
        out["numba"] = None
    try:
        from importlib.metadata import version

        out["constriction"] = version("constriction")
    except Exception:
        out["constriction"] = None
    try:
        from importlib.metadata import version

        out["megabit"] = version("megabit")
    except Exception:
        out["megabit"] = None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200k symbols, 3 trials, fewer table sizes")
    ap.add_argument("--n", type=int, default=None, help="symbols per source (default 1M, quick 200k)")
    ap.add_argument("--trials", type=int, default=None, help="timed trials per measurement (default 5, quick 3)")
    ap.add_argument("--tans-log", type=int, default=11, help="tANS table_log for the speed table")
    ap.add_argument("--rans-log", type=int, default=12, help="rANS precision for the speed table")
    ap.add_argument("--out", default="results/bench_entropy.json")
    args = ap.parse_args(argv)
    n = args.n or (200_000 if args.quick else 1_000_000)
    trials = args.trials or (3 if args.quick else 5)
    if not _common.HAVE_NUMBA:
        print("warning: numba not available, timing the python reference", file=sys.stderr)

    sources = make_sources(n)
    rows, tradeoff = [], []
    for name, x in sources.items():
        counts = np.bincount(x).astype(np.int64)
        H = entropy_bits(counts)
        ref = None
        if constriction is not None:
            size, te, td = bench_constriction(x, counts, trials)
            ref = dict(dec=n / td, enc=n / te)
            rows.append(
                dict(source=name, coder="constriction", k=1, log=None, bytes=size, table_bytes=4 * counts.size,
                     lut_bytes=None, enc_msym_s=n / te / 1e6, dec_msym_s=n / td / 1e6)
            )
        configs = [("tans", tans, args.tans_log, k) for k in (1, 8, 32)] + [("rans", rans, args.rans_log, k) for k in (1, 8)]
        for cname, mod, log, k in configs:
            freqs = quantize_frequencies(counts, log)
            size, te, td = bench_megabit(mod, x, freqs, log, k, trials)
            rows.append(
                dict(source=name, coder=cname, k=k, log=log, bytes=size, table_bytes=len(freqs_to_bytes(freqs)),
                     lut_bytes=(4 << log) if cname == "tans" else None,
                     enc_msym_s=n / te / 1e6, dec_msym_s=n / td / 1e6)
            )
        for r in rows:
            if r["source"] != name:
                continue
            r.update(n=n, entropy_bits=H, entropy_bits_per_symbol=H / n, size_over_entropy=8 * r["bytes"] / H if H else None,
                     size_with_table_over_entropy=8 * (r["bytes"] + r["table_bytes"]) / H if H else None,
                     within_0p1pct=bool(8 * r["bytes"] <= 1.001 * H + 8 * r["table_bytes"]))
            if ref is not None:
                r.update(dec_vs_constriction=r["dec_msym_s"] * 1e6 / ref["dec"], enc_vs_constriction=r["enc_msym_s"] * 1e6 / ref["enc"])
        # table-size trade-off (sizes only; K=1)
        for log in (range(6, 13) if not args.quick else (6, 8, 10, 12)):
            if (counts > 0).sum() > (1 << log):
                continue
            freqs = quantize_frequencies(counts, log)
            size = len(tans.encode(x, freqs, log, 1))
            tradeoff.append(dict(source=name, table_log=log, lut_bytes=4 << log, table_bytes=len(freqs_to_bytes(freqs)),
                                 bytes=size, overhead_pct=100 * (8 * size / H - 1) if H else None,
                                 overhead_pct_without_header=100 * (8 * (size - 22) / H - 1) if H else None))

    # ------------------------------------------------------------ report --
    print(f"\nmegabit.entropy benchmark: n={n} symbols/source, median of {trials} trials, "
          f"{platform.machine()} x{os.cpu_count()} cpus, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}")
    hdr = f"{'source':10} {'H b/sym':>7} {'coder':13} {'K':>2} {'log':>3} {'size/H':>8} {'+tab/H':>8} {'tab B':>5} {'LUT B':>6} " \
          f"{'enc M/s':>8} {'dec M/s':>8} {'dec x':>6} {'<=0.1%':>6}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['source']:10} {r['entropy_bits_per_symbol']:7.4f} {r['coder']:13} {r['k']:>2} {str(r['log'] or '-'):>3} "
              f"{r['size_over_entropy']:8.5f} {r['size_with_table_over_entropy']:8.5f} {r['table_bytes']:5d} "
              f"{str(r['lut_bytes'] or '-'):>6} {r['enc_msym_s']:8.1f} {r['dec_msym_s']:8.1f} "
              f"{r.get('dec_vs_constriction', float('nan')):6.2f} {'yes' if r['within_0p1pct'] else 'no':>6}")
    print("\ntANS table-size trade-off (K=1): overhead of payload over entropy (incl. 22 B header+state) vs decode LUT bytes")
    print(f"{'source':10} " + " ".join(f"{'log' + str(t['table_log']):>8}" for t in tradeoff if t["source"] == "laplace3"))
    for name in sources:
        ts = [t for t in tradeoff if t["source"] == name]
        print(f"{name:10} " + " ".join(f"{t['overhead_pct']:7.3f}%" for t in ts))
    print(f"{'LUT bytes':10} " + " ".join(f"{t['lut_bytes']:8d}" for t in tradeoff if t["source"] == "laplace3"))

    goals = {}
    for cname, k in [("tans", 1), ("tans", 8), ("tans", 32), ("rans", 1), ("rans", 8)]:
        rs = [r for r in rows if r["coder"] == cname and r["k"] == k]
        if not rs:
            continue
        dec = [r.get("dec_vs_constriction") for r in rs if r.get("dec_vs_constriction") is not None]
        goals[f"{cname}_k{k}"] = dict(
            min_dec_vs_constriction=min(dec) if dec else None,
            all_dec_ge_2x=bool(dec) and min(dec) >= 2.0,
            all_within_0p1pct=all(r["within_0p1pct"] for r in rs),
            max_size_over_entropy=max(r["size_over_entropy"] for r in rs),
        )
    print("\ngoals (decode >= 2x constriction; bytes*8 <= 1.001*H + table bits):")
    for key, g in goals.items():
        dec = g["min_dec_vs_constriction"]
        print(f"  {key:8} min dec ratio {dec if dec is None else round(dec, 2)!s:>5}  "
              f"2x: {'yes' if g['all_dec_ge_2x'] else 'no':3}  size: {'yes' if g['all_within_0p1pct'] else 'no'}")

    out = dict(
        benchmark="bench_entropy",
        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=dict(platform=platform.platform(), machine=platform.machine(), processor=platform.processor(),
                     cpu_count=os.cpu_count(), numba_num_threads=os.environ.get("NUMBA_NUM_THREADS")),
        versions=versions(),
        n_symbols=n,
        trials=trials,
        statistic="median",
        settings=dict(tans_table_log=args.tans_log, rans_precision=args.rans_log,
                      constriction_model="Categorical(perfect=False)", constriction_table_bytes="4 bytes per symbol (float32 probs)"),
        results=rows,
        table_tradeoff=tradeoff,
        goals=goals,
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
