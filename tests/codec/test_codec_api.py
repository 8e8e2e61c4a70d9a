import io

import numpy as np
import pytest
from PIL import Image

from megabit.codec.api import Codec, compress_image, decompress_bytes, load_codec
from megabit.fmt.mbc import unpack_mbc

from .conftest import make_tiny_codec


@pytest.mark.parametrize("shape", [(1, 1, 3), (31, 33, 3), (64, 32, 3), (40, 70, 1), (20, 20, 4), (17, 9, 2)])
def test_any_size_and_channels(tiny_codec, shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    for entropy in ("raw", "ans", "auto"):
        data = compress_image(img, tiny_codec, 32, entropy)
        h, _ = unpack_mbc(data)
        assert (h.width, h.height, h.channels) == (shape[1], shape[0], shape[2])
        assert h.entropy_coded == (entropy == "ans") or entropy == "auto"
        out = decompress_bytes(data, tiny_codec)
        assert out.shape == (shape[0], shape[1], 3) and out.dtype == np.uint8


def test_raw_and_ans_decode_identically(tiny_codec):
    img = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    a = decompress_bytes(compress_image(img, tiny_codec, 64, "raw"), tiny_codec)
    b = decompress_bytes(compress_image(img, tiny_codec, 64, "ans"), tiny_codec)
    assert np.array_equal(a, b)


def test_fixed_rate_size(tiny_codec):
    img = np.zeros((64, 96, 3), np.uint8)
    assert len(compress_image(img, tiny_codec, 64, "raw")) == 36 + 6 * 64 // 8 + 4


def test_pil_inputs(tiny_codec):
    for mode in ("L", "RGBA", "P", "I;16"):
        im = Image.new(mode, (40, 30))
        out = decompress_bytes(compress_image(im, tiny_codec, 32), tiny_codec)
        assert out.shape == (30, 40, 3)


def test_other_model_and_corruption(tiny_codec):
    data = compress_image(np.zeros((32, 32, 3), np.uint8), tiny_codec, 32)
    other = Codec.from_model(make_tiny_codec(seed=5), name="codec-tiny")
    with pytest.raises(ValueError, match="made with"):
        decompress_bytes(data, other)
    with pytest.raises(ValueError):
        decompress_bytes(data[:-1], tiny_codec)
    with pytest.raises(ValueError):
        compress_image(np.zeros((8, 8, 3), np.uint8), tiny_codec, 48)  # not a rate of this model
    with pytest.raises(ValueError):
        compress_image(np.zeros((8, 8, 3), np.float32), tiny_codec, 32)


def test_load_codec_errors(tmp_path, tiny_model_file, tiny_codec):
    with pytest.raises(ValueError):
        load_codec(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(Exception):
        load_codec(tmp_path / "junk.pt")
    c = load_codec(tiny_model_file)
    assert c.model_hash == tiny_codec.model_hash and c.model_id == 0
    with pytest.raises(ValueError, match="unknown codec model"):
        load_codec("nope")
