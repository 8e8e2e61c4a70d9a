"""Calibration / training images for codec search and fine-tuning: a folder of PNG/JPEG files.

Images are loaded once as uint8 tensors; :func:`random_crops` draws a batch of random crops with
horizontal/vertical flips, :func:`center_crops` a deterministic calibration batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["list_images", "load_images", "random_crops", "center_crops", "pad_to_multiple"]

_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def list_images(folder: str | os.PathLike) -> list[Path]:
    p = Path(folder)
    if not p.is_dir():
        raise ValueError(f"image folder not found: {p}")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in _EXT)
    if not files:
        raise ValueError(f"no images ({', '.join(_EXT)}) in {p}")
    return files


def load_images(folder: str | os.PathLike, limit: int | None = None, min_side: int = 0) -> list[Tensor]:
    """uint8 [3, H, W] tensors, sorted by file name (first ``limit`` files)."""
    from PIL import Image

    out = []
    for f in list_images(folder)[: limit if limit else None]:
        with Image.open(f) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if min(a.shape[:2]) < min_side:
            raise ValueError(f"{f}: image smaller than {min_side} pixels")
        out.append(torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous())
    return out


def random_crops(images: list[Tensor], n: int, size: int, gen: torch.Generator) -> Tensor:
    """A float batch [n, 3, size, size] in [0, 1]: random image, random crop, random flips."""
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        im = images[int(torch.randint(len(images), (1,), generator=gen))]
        h, w = im.shape[1:]
        if h < size or w < size:
            raise ValueError(f"crop {size} larger than an image ({h}x{w})")
        y = int(torch.randint(h - size + 1, (1,), generator=gen))
        x = int(torch.randint(w - size + 1, (1,), generator=gen))
        c = im[:, y:y + size, x:x + size]
        if torch.rand(1, generator=gen) < 0.5:
            c = c.flip(2)
        if torch.rand(1, generator=gen) < 0.5:
            c = c.flip(1)
        out[i] = c.float() / 255
    return out


def center_crops(images: list[Tensor], size: int) -> Tensor:
    """Deterministic batch: the centre ``size`` x ``size`` crop of every image."""
    out = []
    for im in images:
        h, w = im.shape[1:]
        if h < size or w < size:
            raise ValueError(f"crop {size} larger than an image ({h}x{w})")
        y, x = (h - size) // 2, (w - size) // 2
        out.append(im[:, y:y + size, x:x + size].float() / 255)
    return torch.stack(out)


def pad_to_multiple(x: Tensor, multiple: int = 64) -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad H, W up to a multiple (returns the padded batch and the original size)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)
