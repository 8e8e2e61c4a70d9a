"""``megabit fmpq``: mixed-precision quantization of learned image codecs (FMPQ, arXiv 2506.01221).

Subcommands (each calls :mod:`megabit.search` functions only)::

    megabit fmpq sensitivity --checkpoint codec.pt --data photos/ --out sens.json
    megabit fmpq search --sensitivity sens.json --target-size 2.5Mbit --out plan.json
    megabit fmpq qat --checkpoint codec.pt --plan plan.json --data photos/ --steps 200 --out q.pt
    megabit fmpq eval --quantized q.pt --data kodak/ --out rd.json
    megabit fmpq pack q.pt -o codec.mbit        # the file to ship; `fmpq eval --quantized codec.mbit` runs it

Sizes: plain bits, or a number with ``bit``/``kbit``/``Mbit`` (10^3/10^6 bits), ``B``/``kB``/``MB``
(bytes), or ``N%`` of the all-highest-bit-width size.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

__all__ = ["build_parser", "main", "parse_size", "parse_bits"]

_UNITS = {"": 1, "bit": 1, "bits": 1, "kbit": 10**3, "Mbit": 10**6, "B": 8, "kB": 8 * 10**3, "MB": 8 * 10**6}


def parse_size(text: str, full_size: int | None = None) -> float:
    """'123456' | '2.5Mbit' | '300kB' | '60%' (of ``full_size``) -> bits."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z%]*)\s*", text)
    if not m or (m.group(2) not in _UNITS and m.group(2) != "%"):
        raise ValueError(f"cannot parse size {text!r} (use bits, kbit, Mbit, B, kB, MB or N%)")
    v = float(m.group(1))
    if m.group(2) == "%":
        if full_size is None:
            raise ValueError("a percentage size needs a reference size")
        return v / 100 * full_size
    return v * _UNITS[m.group(2)]


def parse_bits(text: str) -> list[int]:
    """'2-8' or '2,4,8' -> sorted list of bit-widths."""
    try:
        if "-" in text:
            a, b = text.split("-", 1)
            out = list(range(int(a), int(b) + 1))
        else:
            out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"cannot parse bit-widths {text!r} (use e.g. 2-8 or 2,4,8)") from None
    if not out or min(out) < 2 or max(out) > 16:
        raise ValueError(f"bit-widths must lie in 2..16, got {text!r}")
    return sorted(set(out))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="megabit codec checkpoint, or a bare (CompressAI) state_dict")
    p.add_argument("--arch", default=None, help="architecture of a bare state_dict (scale-hyperprior, ...)")
    p.add_argument("--N", type=int, default=None)
    p.add_argument("--M", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit fmpq", description="FMPQ mixed-precision quantization of image codecs")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sensitivity", help="per-layer RD sensitivity zeta_n(b) on a calibration set")
    _add_model_args(s)
    s.add_argument("--data", required=True, help="folder of calibration images")
    s.add_argument("--n-images", type=int, default=8)
    s.add_argument("--crop", type=int, default=256, help="centre crop side (multiple of 64)")
    s.add_argument("--lmbda", type=float, default=None, help="RD trade-off (default: the checkpoint's)")
    s.add_argument("--bits", default="2-8")
    s.add_argument("--granularity", choices=["channel", "tensor"], default="channel",
                   help="weight scales per output channel (default) or one per layer; plans found on this table, "
                        "their QAT and packed files keep it")
    s.add_argument("--out", required=True)

    r = sub.add_parser("search", help="bit-width per layer for a target model size")
    r.add_argument("--sensitivity", required=True)
    r.add_argument("--target-size", required=True, help="bits, 2.5Mbit, 300kB, or N%% of the all-max-bit size")
    r.add_argument("--tol", type=float, default=0.01)
    r.add_argument("--method", choices=["adaptive", "grid", "exhaustive"], default="adaptive")
    r.add_argument("--beta0", type=float, default=0.01)
    r.add_argument("--mode", choices=["scan", "lowest"], default="scan")
    r.add_argument("--criterion", choices=["rd", "bd-proxy"], default="rd",
                   help="rd: the paper's relative RD-loss change; bd-proxy [I]: relative rate + kappa x relative MSE change")
    r.add_argument("--kappa", type=float, default=1.0, help="weight of the relative MSE change in bd-proxy")
    r.add_argument("--out", required=True)

    q = sub.add_parser("qat", help="quantization-aware fine-tuning on the RD loss")
    _add_model_args(q)
    q.add_argument("--plan", required=True)
    q.add_argument("--data", required=True)
    q.add_argument("--lmbda", type=float, default=None)
    q.add_argument("--steps", type=int, default=200)
    q.add_argument("--batch", type=int, default=8)
    q.add_argument("--crop", type=int, default=128)
    q.add_argument("--lr", type=float, default=1e-5)
    q.add_argument("--scale-lr", type=float, default=1e-4)
    q.add_argument("--leak", type=float, default=0.01)
    q.add_argument("--act-bits", type=int, default=None,
                   help="also quantize every quantized layer's input to this many bits (one trained scale per layer, "
                        "absmax-calibrated on the first --n-calib training images); default: the plan's (weight-only)")
    q.add_argument("--n-calib", type=int, default=8, help="images (centre crops of --crop) for activation calibration")
    q.add_argument("--act-lr", type=float, default=1e-3, help="learning rate of the activation log-scales")
    q.add_argument("--amp", choices=["bf16", "none"], default="none")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--out", required=True)

    z = sub.add_parser("size", help="exact plan bits and rANS-coded bytes of a quantized codec's weights")
    z.add_argument("quantized", help="file written by `fmpq qat` (or its packed .mbit)")
    z.add_argument("--json", action="store_true")

    k = sub.add_parser("pack", help="write a quantized codec as a .mbit file (entropy-coded weights)")
    k.add_argument("quantized", help="file written by `fmpq qat`")
    k.add_argument("-o", "--output", required=True, help="output .mbit path (written atomically)")
    k.add_argument("--coder", default="rans", choices=["rans", "tans", "raw"],
                   help="weight coder (a layer that codes no smaller than raw is stored raw)")
    k.add_argument("--json", action="store_true")

    e = sub.add_parser("eval", help="real-bitstream rate-distortion of a float, uniform or FMPQ codec")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--quantized", help="file written by `fmpq qat`, or its .mbit from `fmpq pack`")
    g.add_argument("--checkpoint")
    e.add_argument("--arch", default=None)
    e.add_argument("--N", type=int, default=None)
    e.add_argument("--M", type=int, default=None)
    e.add_argument("--uniform-bits", type=int, default=None, help="with --checkpoint: PTQ all layers to b bits")
    e.add_argument("--plan", default=None, help="with --checkpoint: PTQ with this plan (no fine-tuning)")
    e.add_argument("--granularity", choices=["channel", "tensor"], default="channel",
                   help="with --uniform-bits: scales per output channel or one per layer (a --plan keeps its own)")
    e.add_argument("--data", required=True)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--rate", choices=["bitstream", "likelihood"], default="bitstream",
                   help="bitstream: real compress/decompress (default); likelihood: the model's rate estimate, "
                        "one forward pass (fast for context-model codecs)")
    e.add_argument("--out", default=None)
    return p


def _load_model(a: argparse.Namespace):
    from megabit.models.lic import LICConfig
    from megabit.models.lic.checkpoint import load_codec

    cfg = None
    if a.arch is not None:
        if a.N is None:
            raise ValueError("--arch needs --N (and --M)")
        cfg = LICConfig(a.arch, a.N, a.M if a.M is not None else a.N)
    return load_codec(a.checkpoint, cfg)


def _lmbda(a: argparse.Namespace, meta: dict[str, Any]) -> float:
    lm = a.lmbda if a.lmbda is not None else meta.get("lmbda")
    if lm is None:
        raise ValueError("--lmbda is required (the checkpoint does not record its lambda)")
    if not float(lm) > 0:
        raise ValueError(f"--lmbda must be > 0, got {lm}")
    return float(lm)


def _sensitivity(a: argparse.Namespace) -> int:
    from megabit.search import layer_sensitivity
    from megabit.search.data import center_crops, load_images

    model, meta = _load_model(a)
    lm = _lmbda(a, meta)
    if a.crop % 64:
        raise ValueError("--crop must be a multiple of 64")
    x = center_crops(load_images(a.data, limit=a.n_images, min_side=a.crop), a.crop)
    table = layer_sensitivity(model, x, lm, parse_bits(a.bits),
                              progress=lambda i, n, name: print(f"  [{i}/{n}] {name}", file=sys.stderr),
                              granularity=a.granularity)
    table.meta.update({"checkpoint": str(a.checkpoint), "data": str(a.data), "config": meta.get("config")})
    table.save(a.out)
    print(f"sensitivity of {len(table.layers)} layers x {len(table.bits)} bit-widths "
          f"({table.meta['forward_passes']} forward passes, {table.meta['seconds']} s) -> {a.out}")
    return 0


def _search(a: argparse.Namespace) -> int:
    from megabit.search import SensitivityTable, adaptive_search, exhaustive_search, grid_search, size_bounds

    table = SensitivityTable.load(a.sensitivity).rescored(a.criterion, a.kappa)
    lo, hi = size_bounds(table)
    target = parse_size(a.target_size, hi)
    if a.method == "adaptive":
        res = adaptive_search(table, target, tol=a.tol, beta0=a.beta0, mode=a.mode)
    elif a.method == "grid":
        res = grid_search(table, target, tol=a.tol, mode=a.mode)
    else:
        res = exhaustive_search(table, target, tol=a.tol)
    plan = res.to_plan(table, sensitivity=str(a.sensitivity), codec_config=table.meta.get("config"),
                       criterion=a.criterion, **({"kappa": a.kappa} if a.criterion != "rd" else {}))
    plan.save(a.out)
    status = "within" if res.converged else "NOT within"
    print(f"{res.method}: {res.iterations} iterations, beta={res.beta}, size {res.size_bits} bits "
          f"(per-{table.granularity} scales, "
          f"{plan.mean_bits:.3f} mean weight bits) {status} {a.tol:.1%} of target {target:.0f} "
          f"[all-{table.bits[0]}-bit {lo}, all-{table.bits[-1]}-bit {hi}] -> {a.out}")
    return 0


def _qat(a: argparse.Namespace) -> int:
    import torch

    from megabit.search import QATConfig, QuantPlan, prepare_quantized, qat_finetune, save_quantized
    from megabit.search.data import center_crops, load_images

    torch.set_num_threads(a.threads)
    plan = QuantPlan.load(a.plan)
    model, meta = _load_model(a)
    lm = _lmbda(a, meta)
    cfg = QATConfig(lmbda=lm, steps=a.steps, batch=a.batch, crop=a.crop, lr=a.lr, scale_lr=a.scale_lr, leak=a.leak,
                    act_lr=a.act_lr, amp=a.amp, seed=a.seed)
    if cfg.steps < 0:
        raise ValueError("--steps must be >= 0")
    images = load_images(a.data, min_side=a.crop)
    calib = None
    if a.act_bits is not None:
        plan = QuantPlan(plan.layers, plan.bits, plan.scale_bits, plan.meta, plan.granularity, a.act_bits)
    if plan.act_bits is not None:
        if a.n_calib < 1:
            raise ValueError("--n-calib must be >= 1")
        calib = center_crops(images[: a.n_calib], a.crop)
    prepare_quantized(model, plan, leak=cfg.leak, calib=calib)
    hist = qat_finetune(model, images, cfg, log=lambda r: print(json.dumps(r), file=sys.stderr)) if cfg.steps else []
    model.update(force=True)
    save_quantized(a.out, model, plan, meta["config"], qat=cfg.to_dict(), history=hist, lmbda=lm,
                   source_checkpoint=str(a.checkpoint))
    acts = f", inputs at {plan.act_bits} bits" if plan.act_bits is not None else ""
    print(f"QAT {cfg.steps} steps on {len(images)} images; plan size {plan.size_bits} bits{acts} -> {a.out}")
    return 0


def _eval(a: argparse.Namespace) -> int:
    from megabit.search import (QuantPlan, apply_bits, evaluate_bitstream, evaluate_likelihood, layer_infos,
                                load_quantized)
    from megabit.search.data import load_images

    if a.quantized:
        model, plan, _ = load_quantized(a.quantized)
        label = {"quantized": str(a.quantized), "size_bits": plan.size_bits, "mean_weight_bits": plan.mean_bits,
                 "granularity": plan.granularity, "act_bits": plan.act_bits}
    else:
        model, _ = _load_model(a)
        if a.uniform_bits is not None and a.plan is not None:
            raise ValueError("give --uniform-bits or --plan, not both")
        label = {"checkpoint": str(a.checkpoint)}
        bits, gran = None, a.granularity
        if a.uniform_bits is not None:
            bits = {li.name: a.uniform_bits for li in layer_infos(model)}
        elif a.plan is not None:
            given = QuantPlan.load(a.plan)
            bits, gran = given.bits, given.granularity
        if bits is not None:
            apply_bits(model, bits, learn_scale=False, granularity=gran)
            plan = QuantPlan(layer_infos(model), bits, granularity=gran)
            label.update({"ptq_bits": a.uniform_bits or "plan", "size_bits": plan.size_bits,
                          "mean_weight_bits": plan.mean_bits, "granularity": gran})
            model.update(force=True)
    images = load_images(a.data, limit=a.limit)
    evaluate = evaluate_bitstream if a.rate == "bitstream" else evaluate_likelihood
    res = {**label, **evaluate(model, images)}
    print(f"{res['n_images']} images: {res['mean_bpp']:.4f} bpp, {res['mean_psnr']:.3f} dB PSNR"
          + (f", MS-SSIM {res['mean_ms_ssim']:.4f}" if "mean_ms_ssim" in res else ""))
    if a.out:
        from megabit.utils import atomic_write_text

        atomic_write_text(a.out, json.dumps(res, indent=1))
    return 0


def _pack(a: argparse.Namespace) -> int:
    import torch

    from megabit.fmt.mbit_lic import inspect_lic_mbit, read_lic_mbit, write_lic_mbit
    from megabit.search import load_quantized

    model, plan, obj = load_quantized(a.quantized)
    size = write_lic_mbit(model, plan, obj["config"], a.output, coder=a.coder, meta=_pack_meta(a.quantized, obj))
    back, _, _ = read_lic_mbit(a.output)  # what was written decodes to the same effective weights
    with torch.no_grad():
        for name in plan.bits:
            if not torch.equal(model.get_submodule(name).weight, back.get_submodule(name).weight):
                raise RuntimeError(f"{a.output}: layer {name} does not decode back")  # pragma: no cover - coder bug
    ins = inspect_lic_mbit(a.output)
    res = {"output": a.output, "file_bytes": size, "total_bits": 8 * size, "plan_size_bits": plan.size_bits,
           "weight_bits": ins["weight_bits"], "bits_per_weight": ins["bits_per_weight"],
           "float_section_bytes": ins["float_section_bytes"], "coder": a.coder}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{a.output}: {size:,} bytes; weights {ins['weight_bits'] / 8:,.0f} B = {ins['bits_per_weight']:.3f} "
              f"bits/weight ({a.coder}; plan {plan.size_bits / 8:,.0f} B raw), float32 parameters "
              f"{ins['float_section_bytes']:,} B")
    return 0


def _pack_meta(src, obj: dict) -> dict:
    """What `fmpq pack` records in the file's config section (so `fmpq size` can predict its size)."""
    lm = obj.get("lmbda", obj.get("meta", {}).get("lmbda"))
    return {"source": str(src), "lmbda": lm}


def _size(a: argparse.Namespace) -> int:
    from megabit.fmt.mbit_lic import encode_lic_mbit
    from megabit.search import coded_size, load_quantized

    model, plan, obj = load_quantized(a.quantized)
    res = {"quantized": str(a.quantized), "plan_size_bits": plan.size_bits, "mean_weight_bits": plan.mean_bits,
           **coded_size(model),
           "mbit_file_bytes": len(encode_lic_mbit(model, plan, obj["config"], meta=_pack_meta(a.quantized, obj)))}
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{'layer':<28}{'bits':>5}{'weights':>10}{'H b/w':>8}{'stored':>8}{'bytes':>10}")
    for name, v in res["layers"].items():
        print(f"{name:<28}{v['bits']:>5}{v['n_weights']:>10}{v['entropy_bits_per_weight']:>8.3f}{v['stored']:>8}"
              f"{v['bytes']:>10}")
    print(f"plan: {plan.size_bits} bits = {plan.size_bits / 8:.0f} B raw; rANS-coded: {res['total_bytes']} B "
          f"({res['bits_per_weight']:.3f} bits/weight incl. tables and scales); the whole `fmpq pack` file "
          f"(with float32 biases, GDN and entropy-bottleneck parameters): {res['mbit_file_bytes']} B")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return {"sensitivity": _sensitivity, "search": _search, "qat": _qat, "eval": _eval, "size": _size,
            "pack": _pack}[a.cmd](a)


if __name__ == "__main__":
    from megabit.cli.main import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
