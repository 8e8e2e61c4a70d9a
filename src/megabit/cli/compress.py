"""``megabit compress IMAGE|FOLDER -o OUT [--rate 0.25 | --bpp X] [--model M] [--entropy auto|raw|ans|ctx] [--search STEPS [--rd-lambda L]]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..codec.registry import DEFAULT_MODEL

__all__ = ["build_parser", "main"]

RATES = {"0.125": 128, "0.25": 256, "0.5": 512}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit compress", description="Compress images to .mbc bitstreams with the patch codec.")
    p.add_argument("input", help="an image file, or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output .mbc file (or folder when the input is a folder)")
    p.add_argument("--rate", default=None, help="fixed rate, bits per pixel: 0.125, 0.25 or 0.5 (default 0.25)")
    p.add_argument("--bpp", type=float, default=None, metavar="X",
                   help="adaptive rate instead of --rate: a rate per 32x32 patch (0.125/0.25/0.5), chosen so the file "
                        "has at most X bits per pixel, header included (rate control; ~4 decodes of the image on the "
                        "sender; coded raw or with the context model; with --search, every rate is searched)")
    p.add_argument("--model", default=None, help=f"bundled model name or model .pt file (default: {DEFAULT_MODEL})")
    p.add_argument("--entropy", default="auto", choices=["auto", "raw", "ans", "ctx"],
                   help="raw = fixed rate; ans = rANS with the bit table; ctx = rANS with the causal context model; "
                        "auto = the smallest the model offers (default)")
    p.add_argument("--search", type=int, default=0, metavar="STEPS",
                   help="encoder-side code search: STEPS decoder-guided refinement steps per patch (slow, ~1 s per "
                        "384 patches per step on one core; same format and decoder). 0 = the NQE encoder as is (default)")
    p.add_argument("--rd-lambda", type=float, default=None, metavar="L",
                   help="with --search: rate-distortion search, minimising bpp + L * 255^2 * MSE under the context "
                        "model (CompressAI's lambda; smaller L = fewer bits, e.g. 0.0003 .. 0.003). Default: distortion only")
    p.add_argument("--ctx", default=None, metavar="NAME",
                   help="context model to encode with (--entropy ctx/auto): an alternative shipped beside the model, "
                        "e.g. 'linear' for the bundled models (small enough for the device); default: the model's default")
    return p


def rate_bits(rate: str) -> int:
    key = str(rate).rstrip("0").rstrip(".") if "." in str(rate) else str(rate)
    for k, v in RATES.items():
        if key == k.rstrip("0").rstrip("."):
            return v
    raise ValueError(f"--rate must be one of {', '.join(RATES)} bpp, got {rate}")


def _written(path: Path):
    """(header, bpp) of a written .mbc file."""
    from ..fmt.mbc import unpack_mbc

    data = path.read_bytes()
    h = unpack_mbc(data)[0]
    return h, 8 * len(data) / (h.width * h.height)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from ..codec.api import compress_file, load_codec
    from ..data.images import list_images

    if a.bpp is not None and a.rate is not None:
        raise ValueError("give --rate (fixed) or --bpp (adaptive), not both")
    if a.bpp is not None:
        from ..codec.ratecontrol import check_bpp

        check_bpp(a.bpp)  # before a folder's output is made
    if a.bpp is not None and a.entropy == "ans":
        raise ValueError("--bpp files are coded raw or with the context model (--entropy auto, raw or ctx), not ans")
    rb = rate_bits(a.rate or "0.25")
    from ..codec.search import SearchConfig

    search = SearchConfig(steps=a.search, lmbda=a.rd_lambda)
    src, dst = Path(a.input), Path(a.output)
    if not src.exists():
        raise ValueError(f"no such file or folder: {src}")
    codec = load_codec(a.model)
    if a.ctx:
        codec = codec.select_ctx(a.ctx)
    if src.is_dir():
        from tqdm import tqdm

        files = list_images(src)
        dst.mkdir(parents=True, exist_ok=True)
        total, over = 0, 0
        for f in tqdm(files, desc="compress", unit="img"):
            out = dst / (f.stem + ".mbc")
            total += compress_file(f, out, codec, rb, a.entropy, search, bpp=a.bpp)
            over += a.bpp is not None and _written(out)[1] > a.bpp
        print(f"{len(files)} images -> {dst} ({total} bytes)")
        if over:
            print(f"{over} of {len(files)} files are above --bpp {a.bpp}: the smallest files this model makes")
    else:
        n = compress_file(src, dst, codec, rb, a.entropy, search, progress=True, bpp=a.bpp)
        h, bpp = _written(dst)
        kind = "adaptive rate" if h.adaptive else f"{h.rate_bits} bits/patch"
        print(f"{src} -> {dst} ({n} bytes, {bpp:.4f} bpp, {kind})")
        if a.bpp is not None and bpp > a.bpp:
            print(f"the target --bpp {a.bpp} is below the smallest file this model makes for this image")
    return 0
