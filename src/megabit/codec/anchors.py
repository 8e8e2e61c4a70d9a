"""Classical anchors at a matched rate: JPEG, WebP, AVIF (Pillow) and HEIF (pillow-heif).

``encode_at_bpp`` binary-searches the integer quality (0..100) for the **largest quality whose real
file size is at most the target bpp** (so an anchor never gets more bits than the codec it is
compared with); if even quality 0 is above the target, the quality-0 point is returned with
``"over_target": True``. Settings (fixed, recorded in the results): JPEG ``optimize=True`` 4:2:0;
WebP ``method=4``; AVIF ``speed=8`` (fast preset: the evaluation runs on a shared 2-core CPU) (libavif/aom via Pillow); HEIF pillow-heif defaults (x265).

>>> import numpy as np
>>> img = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
>>> r = encode_at_bpp(img, "jpeg", 4.0)
>>> r["bpp"] <= 4.0 and r["decoded"].shape == img.shape
True
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["ANCHORS", "encode", "encode_at_bpp", "available_anchors", "save_bytes", "load_bytes"]

ANCHORS = ("jpeg", "webp", "avif", "heif")


def save_bytes(img: np.ndarray, codec: str, q: int) -> bytes:
    from PIL import Image

    im = Image.fromarray(img, "RGB")
    buf = io.BytesIO()
    if codec == "jpeg":
        im.save(buf, "JPEG", quality=max(1, q), optimize=True)
    elif codec == "webp":
        im.save(buf, "WEBP", quality=q, method=4)
    elif codec == "avif":
        im.save(buf, "AVIF", quality=q, speed=8)
    elif codec == "heif":
        import pillow_heif

        pillow_heif.register_heif_opener()
        im.save(buf, "HEIF", quality=q)
    else:
        raise ValueError(f"unknown anchor codec {codec!r}; known: {', '.join(ANCHORS)}")
    return buf.getvalue()


def load_bytes(data: bytes, codec: str) -> np.ndarray:
    from PIL import Image

    if codec == "heif":
        import pillow_heif

        pillow_heif.register_heif_opener()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def available_anchors() -> list[str]:
    """Anchors this Pillow build can encode."""
    from PIL import features

    out = ["jpeg"]
    if features.check("webp"):
        out.append("webp")
    if features.check("avif"):
        out.append("avif")
    try:
        import pillow_heif  # noqa: F401

        out.append("heif")
    except ImportError:
        pass
    return out


def encode(img: np.ndarray, codec: str, quality: int) -> dict:
    data = save_bytes(img, codec, quality)
    return {"codec": codec, "quality": quality, "bytes": len(data), "bpp": 8 * len(data) / (img.shape[0] * img.shape[1]),
            "decoded": load_bytes(data, codec)}


def encode_at_bpp(img: np.ndarray, codec: str, target_bpp: float) -> dict:
    """Largest quality with bpp <= target (see module docstring); dict with bpp, quality, decoded."""
    n_pix = img.shape[0] * img.shape[1]
    cache: dict[int, bytes] = {}

    def size(q: int) -> float:
        if q not in cache:
            cache[q] = save_bytes(img, codec, q)
        return 8 * len(cache[q]) / n_pix

    lo, hi = 0, 100
    if size(lo) > target_bpp:
        best, over = lo, True
    else:
        over = False
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if size(mid) <= target_bpp:
                lo = mid
            else:
                hi = mid
        best = hi if size(hi) <= target_bpp else lo
    data = cache[best]
    return {"codec": codec, "quality": best, "bytes": len(data), "bpp": 8 * len(data) / n_pix,
            "over_target": over, "decoded": load_bytes(data, codec)}
