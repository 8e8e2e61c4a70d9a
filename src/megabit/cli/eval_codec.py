"""``megabit eval-codec --data-root DIR [--model M] [--rates 128 256 512 | 0.125 0.25 0.5] [--json OUT] [--plot rd.png] [--search STEPS [--rd-lambda L]]``."""

from __future__ import annotations

import argparse
import json

from ..codec.registry import DEFAULT_MODEL

__all__ = ["build_parser", "main"]


def _rate(s: str) -> int:
    """'256' -> 256 bits per patch; '0.25' (bpp, anything with a point) -> 256 = 0.25 * 32 * 32."""
    try:
        bits = float(s) * 1024 if "." in s else int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {s!r} (bits per patch, e.g. 256, or bpp, e.g. 0.25)") from None
    if bits <= 0 or bits != int(bits):
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number of bits per 32x32 patch")
    return int(bits)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit eval-codec",
                                description="Rate-distortion evaluation: bpp (real file size), PSNR, MS-SSIM, blockiness; "
                                            "JPEG/WebP/AVIF/HEIF at matched bpp; ablation without refinement.")
    p.add_argument("--data-root", required=True, help="folder of evaluation images (e.g. kodak/)")
    p.add_argument("--model", default=None, help=f"bundled model name or .pt file (default: {DEFAULT_MODEL})")
    p.add_argument("--rates", type=_rate, nargs="+", default=[128, 256, 512],
                   help="bits per 32x32 patch (128 256 512), or bpp as compress --rate takes it (0.125 0.25 0.5)")
    p.add_argument("--anchors", nargs="*", default=None, help="subset of jpeg webp avif heif (default: all available)")
    p.add_argument("--anchors-only", action="store_true", help="evaluate the anchors only (no model needed)")
    p.add_argument("--anchor-cache", default=None, help="JSON file caching anchor results between runs")
    p.add_argument("--anchors-from", nargs="+", default=None, metavar="RESULT_JSON",
                   help="reuse the anchor results of earlier eval-codec --json files (same images and rates)")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--json", default=None, help="write the full result (per image + mean) to this file (rewritten "
                                                "after every image with \"partial\": true until done)")
    p.add_argument("--plot", default=None, help="write an RD plot (PNG)")
    p.add_argument("--published", default=None, help="folder of CompressAI result JSONs to draw on the plot")
    p.add_argument("--search", type=int, default=0, metavar="STEPS",
                   help="encoder-side code search steps (megabit.codec.search; slow). Rows then also hold the "
                        "encoder-only result of the same image (no_search). 0 = off (default)")
    p.add_argument("--rd-lambda", type=float, default=None, metavar="L",
                   help="with --search: rate-distortion search (bpp + L * 255^2 * MSE under the context model)")
    p.add_argument("--anchors-at-real", nargs="*", default=["jpeg", "webp"], choices=["jpeg", "webp", "avif", "heif"],
                   help="anchors also encoded at the model's real (entropy-coded) bpp of each image "
                        "(default: jpeg webp; none: pass the flag without names)")
    p.add_argument("--extra", default=None, help="JSON object merged into the result (e.g. training facts)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    import torch

    from ..codec.api import load_codec
    from ..codec.evaluate import anchor_cache_from_results, evaluate_codec, plot_rd
    from ..codec.search import SearchConfig
    from ..utils import atomic_write_text

    torch.set_num_threads(1)
    seed = anchor_cache_from_results(*a.anchors_from) if a.anchors_from else None
    codec = None if a.anchors_only else load_codec(a.model)
    res = evaluate_codec(a.data_root, codec, tuple(a.rates), None if a.anchors is None else tuple(a.anchors), a.limit,
                         a.anchor_cache, partial_json=a.json, extra=json.loads(a.extra) if a.extra else None, seed_cache=seed,
                         search=SearchConfig(steps=a.search, lmbda=a.rd_lambda), anchors_at_real=tuple(a.anchors_at_real))
    if a.json:
        atomic_write_text(a.json, json.dumps(res, indent=1))
    if a.plot:
        plot_rd(res, a.plot, a.published)
    print(json.dumps(res["mean"], indent=1))
    return 0
