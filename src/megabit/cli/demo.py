"""`megabit demo`: run the bundled 1-Mbit classifier on 500 bundled CIFAR-10 test images.

Prints the accuracy, the bit budget table, a few predictions, and checks that the integer-only
path predicts exactly what the PyTorch model predicts. Needs no data download. When the patch
codec is installed with its bundled model, the demo also compresses a bundled Kodak image.
"""

from __future__ import annotations

import argparse
import importlib.util


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit demo", description=__doc__)
    p.add_argument("--out", default="megabit-demo", help="folder for the demo's output files")
    p.add_argument("--no-codec", action="store_true", help="skip the image-codec part")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from megabit.cli.budget import format_table, mbit_budget
    from megabit.data import CIFAR10_CLASSES, load_cifar10
    from megabit.export import IntegerNQE, budget_table
    from megabit.fmt.mbit import read_mbit
    from megabit.hub import bundled_classifier_path, resolve_classifier, sample_cifar_path
    from megabit.train.classifier import predict_logits

    model, src = resolve_classifier(None)
    data = load_cifar10(sample_cifar_path(), "test")
    print(f"== megabit demo: 1-Mbit NQE classifier ({src})")
    print(f"   {len(data)} bundled CIFAR-10 test images (from the JPEG-q75 copy of CIFAR-10)\n")
    path = bundled_classifier_path()
    if path is not None:  # what the device stores: the packed file, every byte counted
        t = mbit_budget(read_mbit(path))
        print(format_table(t))
        print(f"packed file {path.name}: {t['file_bytes']:,} bytes = {t['total_bits']:,} bits "
              f"(rows: raw bit-packing, {t['raw_total_bits']:,} bits in all)\n")
    else:
        print(format_table(budget_table(model.cfg)) + "\n")
    logits = predict_logits(model, data.x, tta=True)
    pred = logits.argmax(1)
    acc = float((pred == data.y).float().mean())
    net = IntegerNQE.from_model(model)
    ipred = net.predict(data.x, tta=True).argmax(1)
    mism = int((ipred != pred).sum())
    print(f"accuracy on the bundled sample: {100 * acc:.1f}% ({int((pred == data.y).sum())}/{len(data)}, flip TTA)")
    print(f"integer-only inference: {mism} mismatches against the PyTorch model\n")
    print("first predictions:")
    for i in range(8):
        ok = "ok " if pred[i] == data.y[i] else "-- "
        print(f"  {ok}image {i}: predicted {CIFAR10_CLASSES[pred[i]]:<10} true {CIFAR10_CLASSES[data.y[i]]}")
    if not a.no_codec and importlib.util.find_spec("megabit.codec.demo") is not None:
        from megabit.codec.demo import run_demo

        print()
        run_demo(a.out)
    return 0 if mism == 0 else 1
