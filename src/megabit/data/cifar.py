"""CIFAR-10 loading: whole splits as uint8 tensors in memory, augmentation on tensors.

Accepted roots (``load_cifar10(root, split)``):

* the megabit/shared layout: ``root/train.npz`` and ``root/test.npz`` holding the original JPEG
  bytes (keys ``jpeg``, ``offsets``, ``labels``), as in ``shared/data/cifar10-jpeg-q75``;
* the standard CIFAR-10 python batches: ``root/data_batch_1..5`` and ``root/test_batch``
  (also found under ``root/cifar-10-batches-py/``);
* an image folder: ``root/<split>/<class>/*.png|jpg`` with the ten CIFAR class names;
* a single ``.npz`` file in the first layout (e.g. the bundled 500-image test sample).

Decoded arrays are cached next to nothing the user owns: in ``$MEGABIT_CACHE`` (default
``~/.cache/megabit``), keyed by the source file's size and mtime.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["CIFAR10_CLASSES", "Split", "load_cifar10", "DataError", "random_crop_flip", "batches", "tta_views",
           "TTA_LEVELS"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """A data root is missing or malformed (reported as one line by the CLI)."""


@dataclass
class Split:
    x: torch.Tensor  # uint8 [N, 3, 32, 32]
    y: torch.Tensor  # int64 [N]
    source: str

    def __len__(self) -> int:
        return len(self.y)


def _cache_dir() -> Path:
    return Path(os.environ.get("MEGABIT_CACHE", Path.home() / ".cache" / "megabit"))


def _decode_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    try:
        z = np.load(path)
        jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
    except Exception as e:  # noqa: BLE001 - any parse failure is a data error
        raise DataError(f"{path}: not a megabit CIFAR npz ({type(e).__name__}: {e})") from None
    n = len(labels)
    if len(offsets) != n + 1 or offsets[-1] != len(jpeg):
        raise DataError(f"{path}: offsets do not match the JPEG byte array")
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"cifar-{key}.npy"
    if cache.exists():
        x = np.load(cache)
        if x.shape == (n, 32, 32, 3):
            return x, labels.astype(np.int64)
    x = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        x[i] = np.asarray(Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, x)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home is fine: we just decode again next time
    return x, labels.astype(np.int64)


def _load_pickles(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for nm in names:
        p = root / nm
        try:
            with open(p, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(d[b"labels"], np.int64)
        except FileNotFoundError:
            raise DataError(f"{p}: missing CIFAR-10 python batch") from None
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{p}: not a CIFAR-10 python batch ({type(e).__name__})") from None
        xs.append(data.transpose(0, 2, 3, 1))
        ys.append(lab)
    return np.concatenate(xs), np.concatenate(ys)


def _load_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for ci, cname in enumerate(CIFAR10_CLASSES):
        d = root / cname
        if not d.is_dir():
            raise DataError(f"{root}: image folder lacks class directory {cname!r}")
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
                im = Image.open(p).convert("RGB")
                if im.size != (32, 32):
                    raise DataError(f"{p}: expected a 32x32 image, got {im.size[0]}x{im.size[1]}")
                xs.append(np.asarray(im))
                ys.append(ci)
    if not xs:
        raise DataError(f"{root}: no images found")
    return np.stack(xs), np.asarray(ys, np.int64)


def load_cifar10(root: str | os.PathLike, split: str = "train", limit: int | None = None) -> Split:
    """Load a CIFAR-10 split as uint8 NCHW tensors. Raises DataError with a one-line reason."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if root.is_file() and root.suffix == ".npz":
        x, y = _decode_npz(root)
        src = str(root)
    elif (root / f"{split}.npz").exists():
        x, y = _decode_npz(root / f"{split}.npz")
        src = f"{root / f'{split}.npz'} (JPEG q75 copy of CIFAR-10)" if "jpeg" in str(root) else str(root)
    elif (root / "cifar-10-batches-py").is_dir():
        x, y = _load_pickles(root / "cifar-10-batches-py", split)
        src = str(root / "cifar-10-batches-py")
    elif (root / "test_batch").exists() or (root / "data_batch_1").exists():
        x, y = _load_pickles(root, split)
        src = str(root)
    elif (root / split).is_dir():
        x, y = _load_folder(root / split)
        src = str(root / split)
    else:
        raise DataError(
            f"{root}: no CIFAR-10 found (expected {split}.npz, python batches, or {split}/<class>/ images)"
        )
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{src}: labels outside 0..9")
    if limit is not None:
        # a class-balanced slice, so small evaluations are not all one class (test npz is class-sorted)
        idx = np.concatenate([np.flatnonzero(y == c)[: (limit + 9) // 10] for c in range(10)])[:limit]
        idx.sort()
        x, y = x[idx], y[idx]
    xt = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    return Split(xt, torch.from_numpy(np.ascontiguousarray(y)), src)


# test-time augmentation levels: how many views of each image are scored (the scores are summed)
TTA_LEVELS = {0: "none (1 view)", 1: "horizontal flip (2 views)",
              2: "flip x {no shift, 1-pixel shift up-left, 1-pixel shift down-right} (6 views)"}


def _shift1(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate uint8 images by (dy, dx) in {-1, 0, 1} with reflect padding (same dtype)."""
    h, w = x.shape[-2:]
    xp = torch.nn.functional.pad(x.float(), (1, 1, 1, 1), mode="reflect").to(x.dtype)
    return xp[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def tta_views(x: torch.Tensor, level: int | bool = 1):
    """The test-time views of ``x`` (``[N, C, H, W]``) at ``level`` (see ``TTA_LEVELS``), one at a time.

    Level 2 is airbench's: flips of the image and of its 1-pixel diagonal translations (reflect
    padding). [I] Every view has weight 1, so summed integer logits stay integers (airbench weighs
    the untranslated pair double; measured on the bundled model, equal weights were as good).
    """
    level = int(level)
    if level not in TTA_LEVELS:
        raise ValueError(f"TTA level must be one of {sorted(TTA_LEVELS)} (got {level})")
    shifts = [(0, 0)] if level < 2 else [(0, 0), (-1, -1), (1, 1)]
    for dy, dx in shifts:
        v = x if (dy, dx) == (0, 0) else _shift1(x, dy, dx)
        yield v
        if level >= 1:
            yield v.flip(3)


def random_crop_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect padding) and horizontal flip, on uint8."""
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x.float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)[None]
    cols = dx[:, None] + torch.arange(w)[None]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(n)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None, drop_last: bool = False):
    idx = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - (n % batch_size) if drop_last else n
    for i in range(0, stop, batch_size):
        yield idx[i : i + batch_size]
