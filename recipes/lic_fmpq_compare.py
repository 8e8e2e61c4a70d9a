"""BD-rates between variants of two FMPQ study reports that share their float codecs.

Each ``results/fmpq_<arch>[_<tag>].json`` holds Kodak (and any ``--extra-eval``) points per lambda.
Studies run on the same float checkpoints with another quantizer (``--granularity tensor``,
``--act-bits 8``) can be compared point for point: e.g. per-tensor u8 against per-channel u8.

    python recipes/lic_fmpq_compare.py results/fmpq_scale-hyperprior_x3.json:u8 \\
        results/fmpq_scale-hyperprior_pt.json:u8 results/fmpq_scale-hyperprior_pt.json:fmpq8 \\
        --out results/fmpq_compare_scale-hyperprior.json

The first ``FILE:VARIANT`` is the anchor; every other one is compared with it (PSNR and MS-SSIM-dB
BD-rate, cubic), on the lambdas both have.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from megabit.metrics import bd_psnr, bd_rate
from megabit.utils import atomic_write_text


def points(spec: str, dataset: str = "kodak") -> tuple[str, dict[str, tuple[float, float, float | None]]]:
    path, sep, variant = spec.rpartition(":")
    if not sep or not path:
        raise SystemExit(f"lic_fmpq_compare: error: expected FILE:VARIANT, got {spec!r}")
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"lic_fmpq_compare: error: cannot read {path}: {e}") from None
    out = {}
    for lm, row in d.get("per_lambda", {}).items():
        r = row.get(dataset, {}).get(variant)
        if r:
            ms = r.get("ms_ssim")
            out[lm] = (r["bpp"], r["psnr"], -10 * math.log10(1 - ms) if ms else None)
    if len(out) < 4:
        raise SystemExit(f"lic_fmpq_compare: error: {spec} has {len(out)} {dataset} points (BD-rate needs 4)")
    return spec, out


def compare(anchor: dict, test: dict) -> dict:
    lams = sorted(set(anchor) & set(test), key=float)
    if len(lams) < 4:
        raise SystemExit("lic_fmpq_compare: error: fewer than 4 common lambdas")
    ra, pa, ma = zip(*(anchor[lm] for lm in lams))
    rt, pt, mt = zip(*(test[lm] for lm in lams))
    res = {"lambdas": [float(x) for x in lams], "bd_rate_psnr_cubic": round(bd_rate(ra, pa, rt, pt), 3),
           "bd_psnr_cubic_db": round(bd_psnr(ra, pa, rt, pt), 4)}
    if all(v is not None for v in ma + mt):
        res["bd_rate_ms_ssim_db_cubic"] = round(bd_rate(ra, ma, rt, mt), 3)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="+", help="FILE:VARIANT, the first is the anchor")
    p.add_argument("--dataset", default="kodak", help="kodak, or the NAME of an --extra-eval set")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if len(a.specs) < 2:
        raise SystemExit("lic_fmpq_compare: error: give an anchor and at least one test")
    name, anchor = points(a.specs[0], a.dataset)
    res = {"anchor": name, "dataset": a.dataset, "vs": {}}
    for spec in a.specs[1:]:
        s, pts = points(spec, a.dataset)
        res["vs"][s] = compare(anchor, pts)
        print(f"{s} vs {name}: BD-rate {res['vs'][s]['bd_rate_psnr_cubic']:+.2f} % (PSNR), "
              f"BD-PSNR {res['vs'][s]['bd_psnr_cubic_db']:+.3f} dB")
    if a.out:
        res["command"] = "python recipes/lic_fmpq_compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
        atomic_write_text(a.out, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
