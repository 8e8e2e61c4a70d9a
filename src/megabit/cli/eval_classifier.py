"""`megabit eval-classifier [MODEL] --data-root DIR [--json]`: CIFAR-10 test accuracy and budget.

Without MODEL the bundled 1-Mbit classifier is evaluated. ``--integer`` also runs the
integer-only path and reports how many predictions differ from the fake-quant model. MODEL may
also be a ResNet of the entropy-coded-weights study (``recipes/resnet_table1.py`` model.pt, its run
dir, or its packed ``.mbit``); its ``total_bits`` is the packed file's size (for a model.pt: the
file ``megabit pack`` would write, tANS). The study's accuracies are without TTA (``--no-tta``).
For an NQE ``.mbit`` (or a bundled name) ``total_bits`` is likewise the file's size and
``raw_total_bits`` the raw bit-packing count; for a model.pt, the raw count.
"""

from __future__ import annotations

import argparse
import json
import time


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit eval-classifier", description=__doc__)
    p.add_argument("model", nargs="?", default=None,
                   help="bundled name, .mbit, .pt or run dir (default: bundled nqe-1mbit-ans-hr); NQE or Table-I ResNet")
    p.add_argument("--data-root", required=True, help="CIFAR-10 root (npz, python batches or image folder)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--limit", type=int, default=None, help="evaluate a class-balanced slice of N images")
    p.add_argument("--tta", type=int, choices=(0, 1, 2), default=1,
                   help="test-time augmentation: 0 none, 1 horizontal flip (default, 2 views), 2 flip x 1-pixel "
                        "diagonal shifts (6 views, airbench's; integer sums, still exact)")
    p.add_argument("--no-tta", action="store_true", help="same as --tta 0")
    p.add_argument("--integer", action="store_true", help="also run integer-only inference and count mismatches")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from megabit.data import CIFAR10_CLASSES, load_cifar10
    from megabit.data.cifar import TTA_LEVELS
    from megabit.export import budget_table
    from megabit.fmt.mbit import is_mbit
    from megabit.hub import load_resnet, locate_classifier, resolve_classifier
    from megabit.train.classifier import evaluate, predict_logits

    resnet = load_resnet(a.model) if a.model is not None else None
    if resnet is not None and a.integer:
        raise ValueError("--integer runs the NQE integer-only path; a ResNet has float BatchNorm (no integer path)")
    data = load_cifar10(a.data_root, a.split, a.limit)
    if resnet is not None:
        model, src = resnet, str(a.model)
        extra = {"kind": "resnet", "total_bits": 8 * _resnet_file_bytes(resnet, a.model)}
    else:
        model, src = resolve_classifier(a.model)
        extra = {"kind": "nqe", "total_bits": budget_table(model.cfg)["total_bits"], "norm": model.cfg.norm}
        if is_mbit(packed := locate_classifier(a.model)):  # a .mbit or a bundled one: the file is the budget
            extra.update(raw_total_bits=extra["total_bits"], total_bits=8 * packed.stat().st_size)
    tta = 0 if a.no_tta else a.tta
    t0 = time.time()
    r = evaluate(model, data, tta=tta)
    r.update({"model": src, "data": data.source, "eval_s": round(time.time() - t0, 1), **extra})
    if a.integer:
        from megabit.export import IntegerNQE

        net = IntegerNQE.from_model(model)
        t0 = time.time()
        li = net.predict(data.x, tta=tta)
        lf = predict_logits(model, data.x, tta=tta)
        r["integer_mismatches"] = int((li.argmax(1) != lf.argmax(1)).sum())
        r["integer_accuracy"] = float((li.argmax(1) == data.y).float().mean())
        r["integer_eval_s"] = round(time.time() - t0, 1)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"model: {src}\ndata: {data.source} ({len(data)} images, {a.split})")
        print(f"accuracy: {100 * r['accuracy']:.2f}%  (TTA: {TTA_LEVELS[int(r['tta'])]}; stored bits: {r['total_bits']:,})")
        print("per class: " + ", ".join(f"{c} {100 * v:.1f}" for c, v in zip(CIFAR10_CLASSES, r["per_class"])))
        if a.integer:
            print(f"integer-only: accuracy {100 * r['integer_accuracy']:.2f}%, mismatches vs fake-quant: {r['integer_mismatches']}")
    return 0


def _resnet_file_bytes(model, spec) -> int:
    """Bytes of the ResNet's .mbit: the file itself, or what `megabit pack` (tANS) would write."""
    from pathlib import Path

    p = Path(spec)
    if p.is_file():
        with open(p, "rb") as fh:
            if fh.read(4) == b"MBIT":  # the packed file itself (not read whole just for its magic)
                return p.stat().st_size
    from megabit.fmt.mbit_resnet import encode_resnet_mbit

    return len(encode_resnet_mbit(model, meta={"source": str(spec)}))  # as `megabit pack` writes it
