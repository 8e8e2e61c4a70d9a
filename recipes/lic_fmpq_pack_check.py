"""Pack QAT'd codecs of the FMPQ study as .mbit files and check that the files run as the models did.

For each variant: ``megabit fmpq pack q_<v>.pt`` (rANS), the file's accounting, and (``--eval``
variants) ``megabit fmpq eval --quantized <file>.mbit`` on Kodak compared with the study's own
``kodak_<v>.json`` of the ``.pt`` (equal bpp and PSNR to the last digit = the same bitstreams).

    python recipes/lic_fmpq_pack_check.py --dir runs/fmpqms3/mean-scale-hyperprior/l0.0067 \
        --variants u8,fmpq8,u4,fmpq4 --eval fmpq8 --out results/fmpq_pack_mean-scale-hyperprior.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="one lambda's folder of recipes/lic_fmpq_bd.py")
    p.add_argument("--variants", default="u8,fmpq8,u4,fmpq4")
    p.add_argument("--eval", default="fmpq8", help="variants whose .mbit is evaluated on --data")
    p.add_argument("--data", default="/work/shared/data/kodak")
    p.add_argument("--work", default="runs/fmpq-pack")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from megabit.cli import fmpq
    from megabit.fmt.mbit_lic import inspect_lic_mbit
    from megabit.utils import atomic_write_text

    torch.set_num_threads(1)
    d, w = Path(a.dir), Path(a.work)
    w.mkdir(parents=True, exist_ok=True)
    rows = {}
    for v in filter(None, a.variants.split(",")):
        f = w / f"{d.parent.name}_{d.name}_{v}.mbit"
        fmpq.main(["pack", str(d / f"q_{v}.pt"), "-o", str(f), "--json"])
        ins = inspect_lic_mbit(f)
        row = {"file_bytes": ins["file_bytes"], "plan_size_bits": ins["plan_size_bits"],
               "plan_bytes": ins["plan_size_bits"] / 8, "weight_bits_per_weight": round(ins["bits_per_weight"], 4),
               "plan_mean_weight_bits": round(ins["mean_weight_bits"], 4), "float_section_bytes": ins["float_section_bytes"],
               "table_bytes": ins["table_bytes"], "scale_bytes": ins["scale_bytes"]}
        if v in a.eval.split(","):
            t0 = time.perf_counter()
            out = w / f"{d.parent.name}_{d.name}_{v}_eval.json"
            fmpq.main(["eval", "--quantized", str(f), "--data", a.data, "--out", str(out)])
            e, ref = json.loads(out.read_text()), json.loads((d / f"kodak_{v}.json").read_text())
            row["eval_from_mbit"] = {"bpp": e["mean_bpp"], "psnr": e["mean_psnr"], "n_images": e["n_images"],
                                     "seconds": round(time.perf_counter() - t0, 1)}
            row["eval_from_pt"] = {"bpp": ref["mean_bpp"], "psnr": ref["mean_psnr"], "n_images": ref["n_images"]}
            row["identical"] = e["mean_bpp"] == ref["mean_bpp"] and e["mean_psnr"] == ref["mean_psnr"]
        rows[v] = row
        print(v, json.dumps(row))
    res = {"what": "FMPQ-quantized codecs packed as .mbit (megabit fmpq pack, rANS): file bytes vs the plan's raw "
                   "bits, and the packed file evaluated against the .pt it came from",
           "dir": str(d), "variants": rows, "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                       "threads": 1}}
    atomic_write_text(a.out, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
