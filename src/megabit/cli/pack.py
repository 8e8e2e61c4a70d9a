"""`megabit pack CHECKPOINT -o MODEL.mbit [--coder tans|rans|raw]`: write a packed model file."""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit pack", description=__doc__)
    p.add_argument("model", help="bundled name (e.g. nqe-1mbit), .pt checkpoint/model, run dir or .mbit")
    p.add_argument("-o", "--output", required=True, help="output .mbit path (written atomically)")
    p.add_argument("--coder", default="tans", choices=["tans", "rans", "raw"])
    p.add_argument("--table-log", type=int, default=None, help="tANS table size / rANS precision (log2)")
    p.add_argument("--streams", type=int, default=1, help="interleaved ANS streams")
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from megabit.export import IntegerNQE
    from megabit.fmt.mbit import inspect_mbit, read_mbit, write_mbit
    from megabit.hub import resolve_classifier

    model, src = resolve_classifier(a.model)
    net = IntegerNQE.from_model(model)
    size = write_mbit(net, a.output, coder=a.coder, table_log=a.table_log, n_streams=a.streams,
                      meta={"source": src})
    ins = inspect_mbit(read_mbit(a.output))
    if a.json:
        print(json.dumps({"output": a.output, "file_bytes": size, "total_bits": ins["total_bits"],
                          "bits_per_weight": ins["bits_per_weight"]}))
    else:
        print(f"{a.output}: {size:,} bytes = {8 * size:,} bits ({100 * 8 * size / (1 << 20):.1f}% of 1 Mbit), "
              f"{ins['bits_per_weight']:.3f} bits/weight ({a.coder})")
    return 0
