"""Adaptive rate (a rate per patch) and rate control: allocation, rate map, masked context coding, files."""

import dataclasses
import itertools
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megabit.cli.main import main as cli
from megabit.codec import context_model as cmod
from megabit.codec.api import coded_files, compress_image, decode_header_bits, decompress_bytes, reconstruct
from megabit.codec.ratecontrol import AdaptiveCoder, choose_levels
from megabit.fmt.mbc import FLAG_ADAPTIVE, FLAG_CTX, FLAG_ENTROPY, HEADER, pack_levels, unpack_levels, unpack_mbc

from .test_codec_context import BACKENDS, random_model


@settings(max_examples=40, deadline=None)
@given(levels=st.lists(st.integers(0, 3), min_size=1, max_size=50))
def test_level_map_roundtrip(levels):
    data = pack_levels(levels)
    assert len(data) == (2 * len(levels) + 7) // 8
    assert unpack_levels(data, len(levels)).tolist() == levels


@settings(max_examples=60, deadline=None)
@given(L=st.integers(1, 3), P=st.integers(1, 5), seed=st.integers(0, 2**31), frac=st.floats(0.0, 1.2))
def test_choose_levels_is_optimal_for_its_own_rate(L, P, seed, frac):
    """The Lagrangian allocation fits the budget (when anything does) and no allocation of at most its
    rate has a smaller error (checked against every allocation)."""
    rng = np.random.default_rng(seed)
    R = np.sort(rng.uniform(10, 100, (L, P)), 0)
    D = -np.sort(-rng.uniform(0, 50, (L, P)), 0) + rng.uniform(0, 5, (L, P))
    budget = R.min(0).sum() + frac * (R.max(0).sum() - R.min(0).sum())
    lv = choose_levels(D, R, budget)
    cols = np.arange(P)
    r, d = R[lv, cols].sum(), D[lv, cols].sum()
    assert r <= budget + 1e-9
    for combo in itertools.product(range(L), repeat=P):
        c = np.asarray(combo)
        if R[c, cols].sum() <= r + 1e-9:
            assert D[c, cols].sum() >= d - 1e-9
    # a budget below the cheapest allocation: the cheapest; a huge one: the smallest error
    assert np.array_equal(choose_levels(D, R, R.min(0).sum() - 1), np.argmin(R, 0))
    assert np.array_equal(choose_levels(D, R, 1e12), np.argmin(D, 0))


def test_choose_levels_rejects_bad_shapes():
    with pytest.raises(ValueError, match="levels, patches"):
        choose_levels(np.zeros((2, 3)), np.zeros((3, 2)), 10)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gh=st.integers(1, 4), gw=st.integers(1, 4), seed=st.integers(0, 2**31), backend=st.sampled_from(BACKENDS),
       hidden=st.sampled_from([0, 2]))
def test_context_coding_with_a_rate_per_patch_roundtrips(gh, gw, seed, backend, hidden):
    cm = random_model(4, 3, seed, hidden=hidden)
    rng = np.random.default_rng(seed)
    pr = rng.choice([16, 32, 64], gh * gw)
    pr[0] = 64
    bits = rng.integers(0, 2, (gh * gw, 64)).astype(np.uint8)
    bits[np.arange(64)[None] >= pr[:, None]] = 0  # bits beyond a patch's rate are not sent
    blob = cmod.encode(bits, gh, gw, cm, patch_rates=pr)
    assert np.array_equal(cmod.decode(blob, gh, gw, 64, cm, backend=backend, patch_rates=pr), bits)
    if (pr < 64).any():  # fewer symbols than the fixed-rate map: the decoder must know the rates
        with pytest.raises(ValueError, match="corrupted"):
            cmod.decode(blob, gh, gw, 64, cm, backend=backend)


@pytest.fixture(scope="module")
def ctx_codec(tiny_codec):
    return dataclasses.replace(tiny_codec, ctx=random_model(tiny_codec.model.cfg.code_channels, 3, 0, scale=100))


def _image(seed=3, h=150, w=170):
    """Half flat, half noise: the allocation should give the noisy patches the higher rate."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 120, np.uint8)
    img[:, w // 2 :] = rng.integers(0, 256, (h, w - w // 2, 3))
    return img


@pytest.mark.parametrize("entropy", ["raw", "ctx", "auto"])
def test_adaptive_files_meet_the_target_and_decode(ctx_codec, entropy):
    img = _image()
    npx = img.shape[0] * img.shape[1]
    lo = 8 * len(compress_image(img, ctx_codec, 32, entropy)) / npx
    hi = 8 * len(compress_image(img, ctx_codec, 64, entropy)) / npx
    coder = AdaptiveCoder.prepare(img, ctx_codec, entropy=entropy)
    for t in (lo + 0.3 * (hi - lo), lo + 0.7 * (hi - lo)):
        data = coder.code(t)
        assert 8 * len(data) / npx <= t
        h, bits, pr = decode_header_bits(data, ctx_codec)
        assert h.adaptive and set(np.unique(pr)) == {32, 64} and h.rate_bits == 64
        assert h.ctx_coded == (entropy == "ctx" or (entropy == "auto" and data[5] & FLAG_CTX > 0))
        assert np.array_equal(bits, coder.bits[64] * (np.arange(64)[None] < pr[:, None]))
        assert np.array_equal(coder.bits[32], coder.bits[64][:, :32])  # no search: one nested code
        gw, gh = h.grid
        want = reconstruct(bits, gh, gw, 64, ctx_codec, patch_rates=pr)[0, :, : img.shape[0], : img.shape[1]]
        got = decompress_bytes(data, ctx_codec)
        assert np.array_equal(got, want.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    # more bits never cost quality in the allocation's own measure
    d = [coder.D[choose_levels(coder.D, coder.R, b), np.arange(coder.D.shape[1])].sum() for b in (1e3, 3e3, 1e9)]
    assert d[0] >= d[1] >= d[2]


def test_adaptive_edge_cases(ctx_codec, tiny_codec):
    img = _image(h=64, w=64)
    tiny = compress_image(img, ctx_codec, bpp=1e-3)  # below the smallest file: the smallest file, fixed rate
    h, _, pr = decode_header_bits(tiny, ctx_codec)
    assert not h.adaptive and pr is None and h.rate_bits == 32
    big = compress_image(img, ctx_codec, bpp=100.0)
    assert decode_header_bits(big, ctx_codec)[0].rate_bits == 64 or not unpack_mbc(big)[0].adaptive
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive"):
            compress_image(img, ctx_codec, bpp=bad)
    with pytest.raises(ValueError, match="not with the bit table|not 'ans'"):
        compress_image(img, ctx_codec, bpp=0.1, entropy="ans")
    with pytest.raises(ValueError, match="no context model"):
        compress_image(img, tiny_codec, bpp=0.1, entropy="ctx")


def test_adaptive_with_code_search(ctx_codec):
    """Each rate is searched on its own; the file sends each patch's searched code at its rate."""
    from megabit.codec.api import _to_tensor
    from megabit.codec.search import search_bits
    from megabit.data.images import pad_to_multiple

    img = _image(h=96, w=128)
    plain = AdaptiveCoder.prepare(img, ctx_codec, entropy="raw")
    coder = AdaptiveCoder.prepare(img, ctx_codec, entropy="raw", search=3)
    x = _to_tensor(pad_to_multiple(img, 32))
    for r in (32, 64):
        assert np.array_equal(coder.bits[r], search_bits(ctx_codec, x, plain.bits[r], r, 3))
    assert any((coder.bits[r] != plain.bits[r]).any() for r in (32, 64))
    pr = np.array([32, 64] * (coder.gh * coder.gw // 2) + [64] * (coder.gh * coder.gw % 2))
    data = coded_files(coder.assemble(pr), coder.gh, coder.gw, ctx_codec, 128, 96, 3, 64, "raw", patch_rates=pr)["raw"]
    _, bits, got = decode_header_bits(data, ctx_codec)
    assert np.array_equal(got, pr)
    assert np.array_equal(bits[pr == 32, :32], coder.bits[32][pr == 32])
    assert np.array_equal(bits[pr == 64], coder.bits[64][pr == 64])
    npx = 96 * 128
    t = 8 * len(compress_image(img, ctx_codec, 64, "raw")) / npx
    assert 8 * len(compress_image(img, ctx_codec, bpp=t, entropy="raw", search=3)) / npx <= t


def _mixed_file(ctx_codec, entropy="raw"):
    img = _image()
    npx = img.shape[0] * img.shape[1]
    lo = 8 * len(compress_image(img, ctx_codec, 32, entropy)) / npx
    hi = 8 * len(compress_image(img, ctx_codec, 64, entropy)) / npx
    data = compress_image(img, ctx_codec, bpp=0.5 * (lo + hi), entropy=entropy)
    assert unpack_mbc(data)[0].adaptive
    return data


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_adaptive_header_and_map_errors(ctx_codec):
    data = _mixed_file(ctx_codec)
    body = bytearray(data[:-4])
    body[5] = FLAG_ADAPTIVE | FLAG_ENTROPY
    with pytest.raises(ValueError, match="adaptive"):
        unpack_mbc(_with_crc(bytes(body)))
    body = bytearray(data[:-4])
    nmap = unpack_mbc(data)[0].level_map_bytes
    body[HEADER.size : HEADER.size + nmap] = b"\xff" * nmap  # level 3: a rate the model does not have
    with pytest.raises(ValueError, match="rate map"):
        decompress_bytes(_with_crc(bytes(body)), ctx_codec)
    short = bytearray(data[: HEADER.size + 1])  # payload shorter than its rate map
    short[32:36] = struct.pack("<I", 1)
    with pytest.raises(ValueError, match="rate map"):
        unpack_mbc(_with_crc(bytes(short)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 10**6), val=st.integers(0, 255), cut=st.booleans(), fix_crc=st.booleans(),
       entropy=st.sampled_from(["raw", "ctx"]))
def test_corrupted_adaptive_files_give_one_value_error(ctx_codec, pos, val, cut, fix_crc, entropy):
    data = _FILES.setdefault(entropy, _mixed_file(ctx_codec, entropy))
    b = bytearray(data[:-4])
    if cut:
        b = b[: pos % len(b)]
    else:
        b[pos % len(b)] = val
    bad = _with_crc(bytes(b)) if fix_crc else bytes(b) + data[-4:]
    try:
        out = decompress_bytes(bad, ctx_codec)
    except ValueError:
        return
    assert out.shape == (150, 170, 3)  # a change the format cannot detect still decodes to the right size


_FILES: dict = {}


def test_cli_bpp(tmp_path, tiny_model_file):
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(_image()).save(src)
    out = tmp_path / "a.mbc"
    assert cli(["compress", str(src), "-o", str(out), "--model", str(tiny_model_file), "--bpp", "0.09"]) == 0
    assert 8 * out.stat().st_size / (150 * 170) <= 0.09
    assert cli(["decompress", str(out), "-o", str(tmp_path / "a.png2.png"), "--model", str(tiny_model_file)]) == 0
    assert Image.open(tmp_path / "a.png2.png").size == (170, 150)
    for extra in (["--rate", "0.25"], ["--entropy", "ans"]):
        bad = tmp_path / "bad.mbc"
        assert cli(["compress", str(src), "-o", str(bad), "--model", str(tiny_model_file), "--bpp", "0.1", *extra]) == 2
        assert not bad.exists()
    assert cli(["compress", str(src), "-o", str(tmp_path / "z.mbc"), "--bpp", "-0.1"]) == 2
