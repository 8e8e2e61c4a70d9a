"""The codec half of `megabit demo` on a small crop of the bundled Kodak image."""

import numpy as np
import pytest
from PIL import Image

from megabit.codec.demo import DEMO_IMAGE, run_demo, side_by_side
from megabit.codec.registry import DEFAULT_MODEL, asset_path


def test_side_by_side_geometry():
    a = np.zeros((10, 7, 3), np.uint8)
    b = np.full((10, 5, 3), 255, np.uint8)
    im = side_by_side([a, b], ["a", "b"])
    assert im.size == (7 + 8 + 5, 10 + 18)
    arr = np.asarray(im)
    assert (arr[18:, :7] == 0).all() and (arr[18:, 15:] == 255).all()


@pytest.mark.skipif(not asset_path(DEFAULT_MODEL).is_file(), reason="no bundled codec")
def test_run_demo_writes_files_and_compares_with_jpeg(tmp_path):
    assert DEMO_IMAGE.is_file()
    crop = np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))[100:164, 200:296]
    src = tmp_path / "crop.png"
    Image.fromarray(crop).save(src)
    lines = []
    rows = run_demo(tmp_path / "out", image=src, log=lines.append)
    mbc = tmp_path / "out" / "crop.mbc"
    assert mbc.is_file() and (tmp_path / "out" / "crop-side-by-side.png").is_file()
    # bpp is the real file size, and JPEG is held to the same size (or flagged when it cannot get there)
    assert rows["megabit"]["bpp"] == pytest.approx(8 * mbc.stat().st_size / (64 * 96))
    assert rows["jpeg"]["over_target"] or rows["jpeg"]["bpp"] <= rows["megabit"]["bpp"]
    assert rows["adaptive"]["bpp"] <= rows["megabit"]["bpp"] and 5 < rows["adaptive"]["psnr"] < 60
    assert 5 < rows["megabit"]["psnr"] < 60 and any("PSNR" in l for l in lines)
    sbs = Image.open(tmp_path / "out" / "crop-side-by-side.png")
    assert sbs.size == (3 * 96 + 16, 64 + 18)
