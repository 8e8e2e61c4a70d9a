"""`megabit pack MODEL -o MODEL.mbit [--coder tans|rans|raw]`: write a packed model file.

MODEL: a classifier (bundled name such as nqe-1mbit, checkpoint, run dir, .mbit), the edge half
of a patch codec (bundled name such as codec-nested, or a codec model.pt): its integer patch
encoder is packed (kind "patch-encoder"; the float decoder stays on the server), or a ResNet
model.pt of recipes/resnet_table1.py (kind "resnet": coded steps and codes, float32 BatchNorm), or
an FMPQ-quantized image codec from `megabit fmpq qat` (kind "lic", as `megabit fmpq pack`; default
coder there: the one given here).
"""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit pack", description=__doc__)
    p.add_argument("model", help="bundled name (nqe-1mbit, codec-nested), .pt checkpoint/model, run dir or .mbit")
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
    from megabit.hub import load_resnet, resolve_classifier

    if _is_quantized_lic(a.model):  # an `fmpq qat` result: same as `megabit fmpq pack`
        from megabit.cli import fmpq

        if a.table_log is not None or a.streams != 1:
            raise ValueError("--table-log / --streams are not options of a quantized image codec's file")
        return fmpq.main(["pack", a.model, "-o", a.output, "--coder", a.coder] + (["--json"] if a.json else []))
    resnet = load_resnet(a.model)
    if resnet is not None:
        return _pack_resnet(resnet, a)
    from megabit.codec.api import find_codec

    codec = find_codec(a.model)
    if codec is not None:
        from megabit.export import IntegerPatchEncoder

        net, src = IntegerPatchEncoder.from_model(codec.model), f"patch encoder of {codec.name}"
    else:
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


def _is_quantized_lic(spec: str) -> bool:
    """True for a file written by `megabit fmpq qat` (a quantized learned image codec)."""
    from pathlib import Path

    p = Path(spec)
    if p.suffix != ".pt" or not p.is_file():
        return False
    import torch

    from megabit.search.qat import QUANT_FORMAT

    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - not ours to judge here; the other loaders report it
        return False
    return isinstance(obj, dict) and obj.get("format") == QUANT_FORMAT


def _pack_resnet(model, a) -> int:
    from megabit.fmt.mbit_resnet import inspect_resnet_mbit, write_resnet_mbit

    size = write_resnet_mbit(model, a.output, coder=a.coder, table_log=a.table_log, n_streams=a.streams,
                             meta={"source": str(a.model)})
    ins = inspect_resnet_mbit(a.output)
    if a.json:
        print(json.dumps({"output": a.output, "file_bytes": size, "total_bits": ins["total_bits"],
                          "bits_per_weight": ins["bits_per_weight"], "kind": "resnet"}))
    else:
        print(f"{a.output}: {size:,} bytes = {8 * size:,} bits, ResNet, {ins['bits_per_weight']:.3f} bits/weight "
              f"over {ins['n_weights']:,} quantized weights ({a.coder})")
    return 0
