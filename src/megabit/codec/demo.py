"""The image-codec half of ``megabit demo``: a bundled Kodak image at 0.25 bpp vs JPEG at the same size.

Compresses ``assets/kodim23.png`` (Kodak PhotoCD, "released for unrestricted usage") with the bundled
patch codec at 256 bits per 32x32 patch, writes the real ``.mbc`` file, decodes it from those bytes,
and reports bpp (from the file size), PSNR, MS-SSIM and blockiness; then JPEG (Pillow) at the largest
quality whose file is not larger, and the adaptive rate (``compress --bpp``: a rate per patch) held
to the same size. Writes ``kodim23.mbc``, ``kodim23-megabit.png`` and a side-by-side
``kodim23-side-by-side.png`` (original | megabit | JPEG) to the output folder.

>>> from megabit.codec.demo import DEMO_IMAGE
>>> DEMO_IMAGE.name
'kodim23.png'
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

__all__ = ["DEMO_IMAGE", "run_demo", "side_by_side"]

DEMO_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "kodim23.png"


def side_by_side(images: list[np.ndarray], labels: list[str]) -> "PIL.Image.Image":  # noqa: F821
    """Images (same height) next to each other with a label strip on top."""
    from PIL import Image, ImageDraw

    h = max(i.shape[0] for i in images)
    gap, strip = 8, 18
    w = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (w, h + strip), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for img, label in zip(images, labels):
        canvas.paste(Image.fromarray(img), (x, strip))
        draw.text((x + 4, 3), label, fill=(0, 0, 0))
        x += img.shape[1] + gap
    return canvas


def run_demo(out_dir: str | os.PathLike = "megabit-demo", rate_bits: int = 256, image: str | os.PathLike | None = None,
             log=print) -> dict:
    """Run the codec demo; returns the numbers it printed."""
    from ..data.images import load_rgb
    from ..utils import atomic_write_bytes
    from .anchors import encode_at_bpp
    from .api import compress_image, decompress_bytes, load_codec
    from .metrics import blockiness, ms_ssim, psnr

    src = Path(image) if image is not None else DEMO_IMAGE
    img = load_rgb(src)
    h, w = img.shape[:2]
    codec = load_codec(None)
    data = compress_image(img, codec, rate_bits=rate_bits)
    out = Path(out_dir)
    atomic_write_bytes(out / f"{src.stem}.mbc", data)
    rec = decompress_bytes(data, codec)
    bpp = 8 * len(data) / (h * w)
    jp = encode_at_bpp(img, "jpeg", bpp)  # JPEG at <= the real size of our file
    ad = compress_image(img, codec, bpp=bpp)  # adaptive rate at <= the same size
    arec = decompress_bytes(ad, codec)
    rows = {
        "megabit": {"bpp": bpp, "psnr": psnr(img, rec), "ms_ssim": ms_ssim(img, rec), "blockiness": blockiness(rec)},
        "adaptive": {"bpp": 8 * len(ad) / (h * w), "psnr": psnr(img, arec), "ms_ssim": ms_ssim(img, arec),
                     "blockiness": blockiness(arec)},
        "jpeg": {"bpp": jp["bpp"], "psnr": psnr(img, jp["decoded"]), "ms_ssim": ms_ssim(img, jp["decoded"]),
                 "blockiness": blockiness(jp["decoded"]), "quality": jp["quality"], "over_target": jp["over_target"]},
    }
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rec).save(buf, format="PNG")
    atomic_write_bytes(out / f"{src.stem}-megabit.png", buf.getvalue())
    sbs = side_by_side([img, rec, jp["decoded"]],
                       ["original", f"megabit {rows['megabit']['bpp']:.3f} bpp {rows['megabit']['psnr']:.2f} dB",
                        f"JPEG q{jp['quality']} {jp['bpp']:.3f} bpp {rows['jpeg']['psnr']:.2f} dB"])
    buf = io.BytesIO()
    sbs.save(buf, format="PNG")
    atomic_write_bytes(out / f"{src.stem}-side-by-side.png", buf.getvalue())

    log(f"== megabit demo: patch codec '{codec.name}' on {src.name} ({w}x{h}), {rate_bits} bits/patch "
        f"(fixed rate {rate_bits / 1024:.3f} bpp; the .mbc may be smaller after its ANS stage)")
    log(f"   {'codec':<8} {'bpp':>7} {'PSNR dB':>8} {'MS-SSIM':>8} {'blockiness':>10}")
    for name, r in rows.items():
        log(f"   {name:<8} {r['bpp']:7.4f} {r['psnr']:8.2f} {r['ms_ssim']:8.4f} {r['blockiness']:10.2f}")
    log("   (adaptive = `megabit compress --bpp`: a rate per patch, held to the fixed-rate file's size)")
    if jp["over_target"]:
        log("   (JPEG cannot go this small: its lowest quality is shown, at a larger size)")
    log(f"   wrote {out / (src.stem + '.mbc')} ({len(data)} bytes), {out / (src.stem + '-side-by-side.png')}")
    return rows
