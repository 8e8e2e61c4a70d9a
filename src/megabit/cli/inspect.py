"""`megabit inspect MODEL.mbit [--json]`: per-layer weights, entropy, coded bits, table overhead."""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit inspect", description=__doc__)
    p.add_argument("model", help="a packed .mbit file")
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from megabit.fmt.mbit import inspect_mbit, read_container, read_mbit

    kind = read_container(a.model)[2]["kind"]
    if kind == "resnet":
        return _inspect_resnet(a)
    if kind == "lic":
        return _inspect_lic(a)
    ins = inspect_mbit(read_mbit(a.model))
    if a.json:
        print(json.dumps(ins))
        return 0
    print(f"{a.model}: model {ins['model']}, {ins['file_bytes']:,} bytes")
    print(f"{'layer':<10} {'coder':<5} {'weights':>9} {'lvls':>4} {'H b/w':>6} {'coded b/w':>9} {'coded bits':>11} {'table B':>7} {'norm B':>6}")
    for r in ins["layers"]:
        print(f"{r['name']:<10} {r['coder']:<5} {r['weights']:>9,} {r['levels']:>4} {r['entropy_bits_per_weight']:>6.3f} "
              f"{r['bits_per_weight']:>9.3f} {r['coded_bits']:>11,} {r['table_bytes']:>7} {r['norm_bytes']:>6}")
    print(f"weights: {ins['n_weights']:,} coded in {ins['weight_bits']:,} bits = {ins['bits_per_weight']:.3f} bits/weight; "
          f"tables {ins['table_bytes']} B, norm/bias {ins['norm_bytes']} B, headers {ins['header_bytes']} B")
    print(f"total: {ins['total_bits']:,} bits of {ins['limit_bits']:,} (2^20) -> {'fits' if ins['fits'] else 'DOES NOT FIT'}")
    return 0


def _inspect_resnet(a, data: bytes | None = None) -> int:
    """Print a ResNet .mbit's accounting: the file ``a.model``, or ``data`` (the bytes it would hold)."""
    from megabit.fmt.mbit_resnet import inspect_resnet_mbit

    ins = inspect_resnet_mbit(a.model if data is None else data)
    if a.json:
        print(json.dumps(ins))
        return 0
    print(f"{a.model}: ResNet {ins['model']}, {ins['file_bytes']:,} bytes")
    print(f"{'tensor':<24} {'coder':<5} {'weights':>9} {'lvls':>4} {'H b/w':>6} {'coded b/w':>9} {'coded bits':>11} {'table B':>7} {'step B':>6}")
    for r in ins["layers"]:
        print(f"{r['name']:<24} {r['coder']:<5} {r['weights']:>9,} {r['levels']:>4} {r['entropy_bits_per_weight']:>6.3f} "
              f"{r['bits_per_weight']:>9.3f} {r['coded_bits']:>11,} {r['table_bytes']:>7} {r['step_bytes']:>6}")
    print(f"weights: {ins['n_weights']:,} coded in {ins['weight_bits']:,} bits = {ins['bits_per_weight']:.3f} bits/weight; "
          f"tables {ins['table_bytes']} B, float32 tensors (BatchNorm, bias) {ins['float_section_bytes']} B")
    print(f"total: {ins['total_bits']:,} bits of {ins['limit_bits']:,} (2^20) -> {'fits' if ins['fits'] else 'DOES NOT FIT'}")
    return 0


def _inspect_lic(a) -> int:
    """Print a quantized image codec's .mbit accounting (``megabit fmpq pack``)."""
    from megabit.fmt.mbit_lic import inspect_lic_mbit

    ins = inspect_lic_mbit(a.model)
    if a.json:
        print(json.dumps(ins))
        return 0
    cfg = ins["model"]
    print(f"{a.model}: quantized {cfg['arch']} (N={cfg['N']}, M={cfg['M']}), {ins['file_bytes']:,} bytes")
    print(f"{'layer':<24} {'bits':>4} {'coder':<5} {'weights':>9} {'H b/w':>6} {'coded b/w':>9} {'coded bits':>11} {'table B':>7} {'scale B':>7}")
    for r in ins["layers"]:
        print(f"{r['name']:<24} {r['bits']:>4} {r['coder']:<5} {r['weights']:>9,} {r['entropy_bits_per_weight']:>6.3f} "
              f"{r['bits_per_weight']:>9.3f} {r['coded_bits']:>11,} {r['table_bytes']:>7} {r['scale_bytes']:>7}")
    print(f"weights: {ins['n_weights']:,} coded in {ins['weight_bits']:,} bits = {ins['bits_per_weight']:.3f} bits/weight "
          f"(plan: {ins['mean_weight_bits']:.3f}); tables {ins['table_bytes']} B, scales {ins['scale_bytes']} B, "
          f"float32 parameters (bias, GDN, entropy bottleneck) {ins['float_section_bytes']} B")
    print(f"total: {ins['file_bytes']:,} bytes = {ins['total_bits']:,} bits (plan size {ins['plan_size_bits']:,} bits)")
    return 0
