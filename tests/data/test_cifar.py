import io

import numpy as np
import pytest
import torch

from megabit.data import DataError, load_cifar10, random_crop_flip
from megabit.hub import sample_cifar_path


def test_python_batches(cifar_root):
    tr = load_cifar10(cifar_root, "train")
    te = load_cifar10(cifar_root, "test")
    assert tr.x.shape == (40, 3, 32, 32) and tr.x.dtype == torch.uint8 and te.x.shape == (20, 3, 32, 32)
    # layout check: python batch rows are 1024 R, 1024 G, 1024 B, row-major
    import pickle

    d = pickle.load(open(cifar_root / "test_batch", "rb"), encoding="bytes")
    assert np.array_equal(te.x[0].numpy().reshape(-1), d[b"data"][0])


def test_npz_jpeg_layout_and_limit():
    s = load_cifar10(sample_cifar_path(), "test")
    assert len(s) == 500 and sorted(torch.bincount(s.y).tolist()) == [50] * 10
    s2 = load_cifar10(sample_cifar_path(), "test", limit=30)
    assert len(s2) == 30 and len(set(s2.y.tolist())) == 10


def test_image_folder(tmp_path):
    from PIL import Image

    from megabit.data import CIFAR10_CLASSES

    for c in CIFAR10_CLASSES:
        (tmp_path / "test" / c).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(tmp_path / "test" / c / "0.png")
    s = load_cifar10(tmp_path, "test")
    assert len(s) == 10 and s.x.max() == 7


@pytest.mark.parametrize("setup", ["missing", "empty", "garbage_batch", "garbage_npz", "bad_split"])
def test_bad_roots_raise_data_error(tmp_path, setup):
    root = tmp_path / "r"
    split = "test"
    if setup == "empty":
        root.mkdir()
    elif setup == "garbage_batch":
        root.mkdir()
        (root / "test_batch").write_bytes(b"not a pickle")
    elif setup == "garbage_npz":
        root.mkdir()
        (root / "test.npz").write_bytes(b"PK\x03\x04junk")
    elif setup == "bad_split":
        split = "val"
    with pytest.raises(DataError):
        load_cifar10(root, split)


def test_augmentation_is_a_translation_or_flip():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, pad=0, generator=g)
    for a, b in zip(x, y):
        assert torch.equal(a, b) or torch.equal(a.flip(2), b)
    y = random_crop_flip(x, pad=4, generator=g)
    assert y.shape == x.shape and y.dtype == torch.uint8


def test_tta_views_are_flips_and_one_pixel_shifts():
    from megabit.data.cifar import tta_views

    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    assert [v.shape for v in tta_views(x, 0)] == [x.shape] and torch.equal(next(tta_views(x, 0)), x)
    v1 = list(tta_views(x, 1))
    assert len(v1) == 2 and torch.equal(v1[1], x.flip(3))
    v2 = list(tta_views(x, 2))
    assert len(v2) == 6 and all(v.dtype == torch.uint8 and v.shape == x.shape for v in v2)
    # views 2 and 4: x moved one pixel diagonally one way and the other (reflect-padded at the edge)
    assert torch.equal(v2[2][..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(v2[4][..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(v2[3], v2[2].flip(3)) and torch.equal(v2[5], v2[4].flip(3))
    with pytest.raises(ValueError, match="TTA level"):
        list(tta_views(x, 3))
