"""Natural-image loading for the patch codec: any Pillow image -> RGB uint8, folders, random crops.

``load_rgb`` is the single place where input images are normalized: grayscale, palette, RGBA/LA
(alpha dropped: [I] the codec codes colour only, as a transparent PNG viewed on black would not be
what the user expects either way), 16-bit and CMYK all become 8-bit RGB.

>>> import numpy as np, PIL.Image
>>> load_rgb(PIL.Image.new("LA", (5, 3))).shape
(3, 5, 3)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["IMAGE_EXTS", "list_images", "load_rgb", "load_folder", "random_crops", "pad_to_multiple"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif", ".heic", ".avif")


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files directly in ``root`` (sorted by name); raises ValueError if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"not a folder: {root}")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"no images in {root}")
    return files


def load_rgb(src) -> np.ndarray:
    """Path or PIL image -> uint8 array [H, W, 3]. Raises ValueError (one line) on unreadable input."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, Image.Image):
        im = src
    else:
        try:
            if str(src).lower().endswith((".heic", ".heif", ".avif")):
                try:
                    import pillow_heif

                    pillow_heif.register_heif_opener()
                except ImportError:  # pragma: no cover - optional extra
                    pass
            im = Image.open(src)
            im.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"cannot read image {src}: {type(e).__name__}") from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA") else im.convert("RGB")
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"unsupported image shape {a.shape}")
    return np.ascontiguousarray(a)


def load_folder(root: str | os.PathLike, limit: int | None = None) -> torch.Tensor:
    """All images of one size in a folder -> uint8 tensor [N, 3, H, W] (for ``photos/``: 256x256 crops)."""
    files = list_images(root)[:limit]
    arrs = [load_rgb(f) for f in files]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise ValueError(f"images in {root} have different sizes: {sorted(shapes)[:3]}")
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def random_crops(images: torch.Tensor, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """n random size x size crops with random horizontal flips; uint8 [n, 3, size, size]."""
    N, _, H, W = images.shape
    idx = torch.randint(0, N, (n,), generator=gen)
    ys = torch.randint(0, H - size + 1, (n,), generator=gen)
    xs = torch.randint(0, W - size + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = torch.empty(n, images.shape[1], size, size, dtype=images.dtype)
    for k in range(n):
        c = images[idx[k], :, ys[k] : ys[k] + size, xs[k] : xs[k] + size]
        out[k] = c.flip(-1) if flips[k] else c
    return out


def pad_to_multiple(a: np.ndarray, m: int) -> np.ndarray:
    """[H, W, C] -> padded to multiples of m by edge replication (bottom/right).

    >>> pad_to_multiple(np.arange(6, dtype=np.uint8).reshape(2, 3, 1), 4)[:, :, 0]
    array([[0, 1, 2, 2],
           [3, 4, 5, 5],
           [3, 4, 5, 5],
           [3, 4, 5, 5]], dtype=uint8)
    """
    h, w = a.shape[:2]
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return a
    return np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge")
