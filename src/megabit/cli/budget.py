"""`megabit budget PRESET_OR_MODEL [--json]`: exact stored bits per layer against 2^20."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit budget", description=__doc__)
    p.add_argument("model", help="preset name (e.g. nqe-1mbit), trained .pt, run dir, packed .mbit, "
                   "or a patch codec (bundled name such as codec-nested-v4, or its model.pt: the edge encoder's bits)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--coder", choices=["tans", "rans", "raw"], default=None,
                   help="presets: also estimate the packed .mbit size with this coder (a random HEQ-calibrated "
                        "model of the preset, packed and measured; see docs/nqe.md)")
    return p


def format_table(t: dict) -> str:
    lines = [f"{'layer':<10} {'kind':<12} {'weights':>9} {'lvls':>4} {'b/w':>5} {'weight bits':>12} {'norm bits':>10} {'other':>7} {'total':>10}"]
    for r in t["layers"]:
        lines.append(f"{r['name']:<10} {r['kind']:<12} {r['weights']:>9,} {r['levels']:>4} {r['bits_per_weight']:>5} "
                     f"{r['weight_bits']:>12,} {r['norm_bits']:>10,} {r['other_bits']:>7,} {r['total_bits']:>10,}")
    lines.append(f"{'total':<10} {'':<12} {t['n_weights']:>9,} {'':>4} {'':>5} {t['weight_bits']:>12,} {'':>10} {'':>7} {t['total_bits']:>10,}")
    pct = 100 * t["total_bits"] / t["limit_bits"]
    lines.append(f"budget: {t['total_bits']:,} of {t['limit_bits']:,} bits (2^20) = {pct:.1f}% "
                 f"-> {'fits' if t['fits'] else 'DOES NOT FIT'}"
                 + (f"; packed payload {t['packed_bytes']:,} bytes" if "packed_bytes" in t else ""))
    return "\n".join(lines)


def mbit_budget(f) -> dict:
    """The budget table of a packed NQE classifier or patch encoder (an ``MbitFile``): per-layer rows as
    raw bit-packing counts them, and as the total what the file occupies, every byte counted."""
    from megabit.export import budget_table
    from megabit.fmt.mbit import inspect_mbit
    from megabit.models.patch_codec import budget as codec_budget

    t = codec_budget(f.codec_config) if f.kind == "patch-encoder" else budget_table(f.config)
    t["raw_total_bits"] = t["total_bits"]
    t["raw_packed_bytes"] = t.pop("packed_bytes", None)  # the raw payload's size; the file's is file_bytes
    ins = inspect_mbit(f)
    t.update({"total_bits": ins["total_bits"], "file_bytes": ins["file_bytes"], "coded_weight_bits": ins["weight_bits"],
              "fits": ins["fits"], "headroom_bits": (1 << 20) - ins["total_bits"]})
    return t


def _bundled_of(name: str) -> dict:
    """A preset's table is its architecture; the trained model bundled under its name may store more
    (e.g. per-channel BSN scales), so its packed file's bits are reported next to it."""
    from megabit.fmt.mbit import read_mbit
    from megabit.hub import bundled_classifier_path

    p = bundled_classifier_path(name)
    if p is None:
        return {}
    t = mbit_budget(read_mbit(p))
    return {"bundled": {"file": p.name, "path": str(p), **{k: t[k] for k in ("total_bits", "file_bytes", "raw_total_bits")}}}


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from megabit.export import budget_table
    from megabit.fmt.mbit import is_mbit
    from megabit.models.nqe import PRESETS
    from megabit.models.patch_codec import budget as codec_budget

    if a.model in PRESETS and not Path(a.model).exists():
        t = budget_table(PRESETS[a.model])
        t["source"] = f"preset {a.model}"
        if a.coder:
            from megabit.fmt.mbit import coded_size_estimate

            t["coded_estimate"] = coded_size_estimate(PRESETS[a.model], a.coder)
        t.update(_bundled_of(a.model))
    elif a.coder:
        raise ValueError("--coder estimates the packed size of a preset; for a trained model run `megabit pack` "
                         "and `megabit inspect`")
    elif is_mbit(a.model):
        from megabit.fmt.mbit import inspect_mbit, read_container, read_mbit

        kind = read_container(a.model)[2]["kind"]
        if kind == "resnet":  # a Table-I ResNet: its file is its budget
            from megabit.cli.inspect import _inspect_resnet

            return _inspect_resnet(a)
        if kind == "lic":  # an FMPQ-quantized image codec: likewise
            from megabit.cli.inspect import _inspect_lic

            return _inspect_lic(a)
        t = mbit_budget(read_mbit(a.model))
        t["source"] = a.model
    else:
        from megabit.codec.api import find_codec  # imported here: it is the slow import of this command
        from megabit.hub import load_resnet, resolve_classifier

        if (codec := find_codec(a.model)) is not None:  # the edge half of a patch codec: its encoder
            t = codec_budget(codec.model)
            t["source"] = f"patch encoder of {codec.name}"
        elif (resnet := load_resnet(a.model)) is not None:  # a Table-I ResNet model.pt: the file `pack` writes
            from megabit.cli.inspect import _inspect_resnet
            from megabit.fmt.mbit_resnet import encode_resnet_mbit

            return _inspect_resnet(a, encode_resnet_mbit(resnet, meta={"source": str(a.model)}))
        else:
            model, src = resolve_classifier(a.model)
            t = budget_table(model.cfg)
            t["source"] = src
    if a.json:
        print(json.dumps(t))
    else:
        print(f"model: {t['model']} ({t['source']})")
        print(format_table(t))
        if "coded_estimate" in t:
            e = t["coded_estimate"]
            print(f"packed with {e['coder']} (estimate: {e['estimate']}): {e['total_bits']:,} bits = "
                  f"{100 * e['total_bits'] / t['limit_bits']:.1f}% of 2^20 -> {'fits' if e['fits'] else 'DOES NOT FIT'}")
        if "bundled" in t:
            b = t["bundled"]
            print(f"bundled trained model {b['file']}: {b['total_bits']:,} bits packed = {100 * b['total_bits'] / t['limit_bits']:.1f}% "
                  f"of 2^20 (raw bit-packing {b['raw_total_bits']:,}; its own table: `megabit budget {b['path']}`)")
        if "file_bytes" in t:
            print(f"packed file: {t['file_bytes']:,} bytes = {t['total_bits']:,} bits (raw bit-packing would be {t['raw_total_bits']:,})")
    return 0
