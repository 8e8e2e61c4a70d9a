"""The causal context model (second stage v2): exact round trips, errors, fit, and its use in .mbc files."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megabit.codec import context_model as cmod
from megabit.codec.api import Codec, compress_image, decode_header_bits, decompress_bytes, load_codec
from megabit.entropy._common import HAVE_NUMBA
from megabit.fmt.mbc import FLAG_CTX, FLAG_ENTROPY, unpack_mbc

BACKENDS = ["python"] + (["numba"] if HAVE_NUMBA else [])


def random_model(channels: int, kernel: int, seed: int, scale: int = 400, hidden: int = 0) -> cmod.ContextModel:
    rng = np.random.default_rng(seed)
    mask = cmod.causal_mask(channels, kernel)
    w = rng.integers(-scale, scale + 1, (channels, channels, kernel, kernel)) * mask
    b = rng.integers(-3 * scale, 3 * scale + 1, (channels, 4, 4))
    u = rng.integers(-scale, scale + 1, (channels, hidden, channels, kernel, kernel)) * mask[:, None]
    ub = rng.integers(-scale, scale + 1, (channels, hidden))
    v = rng.integers(-scale, scale + 1, (channels, hidden))
    return cmod.ContextModel(w, b, cmod.freq_table(4, 16), 8, 4, u, ub, v)


def smooth_maps(n: int, channels: int, side: int, seed: int) -> np.ndarray:
    """Spatially and cross-channel correlated 0/1 maps (thresholded smoothed noise)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, side, side, generator=g)
    z = 5 * torch.nn.functional.avg_pool2d(z, 5, 1, 2)
    z = z + 0.3 * torch.randn(n, channels, side, side, generator=g)
    return (z > 0).to(torch.uint8).numpy()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gh=st.integers(1, 4), gw=st.integers(1, 4), k=st.integers(1, 4), kernel=st.sampled_from([1, 3, 5]),
       p=st.floats(0.0, 1.0), seed=st.integers(0, 2**31), backend=st.sampled_from(BACKENDS),
       hidden=st.sampled_from([0, 0, 1, 3]))
def test_roundtrip(gh, gw, k, kernel, p, seed, backend, hidden):
    cm = random_model(4, kernel, seed, hidden=hidden)
    rng = np.random.default_rng(seed)
    bits = (rng.random((gh * gw, 16 * k)) < p).astype(np.uint8)
    blob = cmod.encode(bits, gh, gw, cm)
    assert np.array_equal(cmod.decode(blob, gh, gw, 16 * k, cm, backend=backend), bits)


def test_layout_roundtrip():
    bits = np.random.default_rng(0).integers(0, 2, (6, 48)).astype(np.uint8)
    s = cmod.code_map(bits, 2, 3)
    assert s.shape == (3, 8, 12) and set(np.unique(s)) <= {-1, 1}
    assert np.array_equal(cmod.bits_from_map(s), bits)
    # bit b of a patch = channel b // 16, row (b % 16) // 4, column b % 4
    assert s[1, 4 + 2, 8 + 3] == 2 * bits[1 * 3 + 2, 16 + 2 * 4 + 3] - 1


@pytest.mark.parametrize("hidden", [0, 2])
def test_sequential_logits_equal_vectorized(hidden):
    """The decoder's per-channel logits (cross + causal self taps) are the encoder's conv logits."""
    cm = random_model(3, 5, 1, hidden=hidden)
    s = cmod.code_map(np.random.default_rng(2).integers(0, 2, (12, 48)).astype(np.uint8), 3, 4)
    full = cm.all_logits(s)
    h = 2

    def taps(wk, c, y, x):
        t = 0
        for dy in range(-h, 1):
            for dx in range(-h, h + 1):
                if (dy == 0 and dx >= 0) or not (0 <= y + dy < s.shape[1] and 0 <= x + dx < s.shape[2]):
                    continue
                t += wk[dy + h, dx + h] * s[c, y + dy, x + dx]
        return t

    for c in range(3):
        base, base_h = cm.cross_logits(s, c)
        for y in range(s.shape[1]):
            for x in range(s.shape[2]):
                acc = base[y, x] + taps(cm.weight[c, c], c, y, x)
                a = [max(base_h[j, y, x] + taps(cm.hidden_weight[c, j, c], c, y, x), 0) for j in range(hidden)]
                acc += sum(int(cm.hidden_out[c, j]) * a[j] for j in range(hidden)) >> 8
                assert acc == full[c, y, x]


def test_fit_learns_correlation_and_payload_matches_ideal():
    maps = smooth_maps(24, 3, 16, 0)
    cm = cmod.fit(maps[:20], cmod.CtxConfig(iters=60))
    bits = [cmod.bits_from_map(m.astype(np.int8) * 2 - 1) for m in maps[20:]]
    ideal = sum(cmod.ideal_bits(b, 4, 4, cm) for b in bits)
    n = sum(b.size for b in bits)
    assert ideal < 0.6 * n  # the maps are far from uniform; a fitted model must see it
    payload = sum(8 * len(cmod.encode(b, 4, 4, cm)) for b in bits)
    assert ideal <= payload <= ideal + 4 * 8 * (cmod.DIGEST + 20 + 8 + 8)


def test_errors():
    cm = random_model(2, 3, 0)
    bits = np.random.default_rng(0).integers(0, 2, (4, 32)).astype(np.uint8)
    blob = cmod.encode(bits, 2, 2, cm)
    with pytest.raises(ValueError, match="different context model"):
        cmod.decode(blob, 2, 2, 32, random_model(2, 3, 1))
    with pytest.raises(ValueError, match="does not match"):
        cmod.decode(blob, 2, 3, 32, cm)  # wrong geometry
    with pytest.raises(ValueError, match="does not fit"):
        cmod.encode(np.zeros((4, 48), np.uint8), 2, 2, cm)  # 3 channels > 2
    with pytest.raises(ValueError):
        cmod.decode(blob[:-3], 2, 2, 32, cm)
    w = cm.weight.copy()
    w[0, 1, 0, 0] = 5  # a later channel: outside the causal mask
    with pytest.raises(ValueError, match="causal mask"):
        cmod.ContextModel(w, cm.bias, cm.f1, 8, 4)
    with pytest.raises(ValueError, match="not a context model"):
        cmod.ContextModel.from_bytes(b"garbage")
    with pytest.raises(ValueError):
        cmod.fit(np.zeros((1, 2, 6, 8), np.uint8))


@settings(max_examples=60, deadline=None)
@given(pos=st.integers(0, 10**6), val=st.integers(0, 255), cut=st.booleans())
def test_corrupted_payload_is_a_value_error(pos, val, cut):
    cm = random_model(2, 3, 3)
    bits = np.random.default_rng(4).integers(0, 2, (6, 32)).astype(np.uint8)
    blob = bytearray(cmod.encode(bits, 2, 3, cm))
    pos %= len(blob)
    if cut:
        blob = blob[:pos]
    elif blob[pos] == val:
        return
    else:
        blob[pos] = val
    for backend in BACKENDS:
        with pytest.raises(ValueError):
            cmod.decode(bytes(blob), 2, 3, 32, cm, backend=backend)


@pytest.mark.parametrize("hidden", [0, 2])
def test_serialization_roundtrip(hidden):
    cm = random_model(4, 5, 7, hidden=hidden)
    cm2 = cmod.ContextModel.from_bytes(cm.to_bytes())
    assert cm2.digest() == cm.digest() and np.array_equal(cm2.weight, cm.weight) and cm2.hidden == hidden
    assert np.array_equal(cm2.hidden_weight, cm.hidden_weight)
    if hidden:  # a hidden layer changes the digest even with the same linear part
        assert cmod.ContextModel(cm.weight, cm.bias, cm.f1, 8, 4).digest() != cm.digest()


def test_fit_hidden_layer():
    maps = smooth_maps(12, 2, 16, 1)
    cm = cmod.fit(maps[:10], cmod.CtxConfig(iters=20, hidden=2))
    assert cm.hidden == 2 and not np.any(cm.hidden_weight * (1 - cmod.causal_mask(2, 5))[:, None])
    b = cmod.bits_from_map(maps[11].astype(np.int8) * 2 - 1)
    assert np.array_equal(cmod.decode(cmod.encode(b, 4, 4, cm), 4, 4, 32, cm), b)


# ----------------------------------------------------------------- in the codec ---


@pytest.fixture(scope="module")
def ctx_codec(tiny_codec):
    return dataclasses.replace(tiny_codec, ctx=random_model(tiny_codec.model.cfg.code_channels, 3, 0, scale=100))


def test_codec_ctx_files(ctx_codec, tiny_codec):
    img = np.random.default_rng(5).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    raw = compress_image(img, ctx_codec, 64, "raw")
    ctx = compress_image(img, ctx_codec, 64, "ctx")
    h, _ = unpack_mbc(ctx)
    assert h.ctx_coded and not h.entropy_coded and ctx[5] == FLAG_CTX
    assert np.array_equal(decode_header_bits(ctx, ctx_codec)[1], decode_header_bits(raw, ctx_codec)[1])
    assert np.array_equal(decompress_bytes(ctx, ctx_codec), decompress_bytes(raw, ctx_codec))
    auto = compress_image(img, ctx_codec, 64, "auto")
    assert len(auto) == min(len(raw), len(ctx), len(compress_image(img, ctx_codec, 64, "ans")))
    with pytest.raises(ValueError, match="no context model"):
        decompress_bytes(ctx, tiny_codec)  # same encoder and hash, but no context model loaded
    with pytest.raises(ValueError, match="no context model"):
        compress_image(img, tiny_codec, 64, "ctx")
    bad = bytearray(ctx)
    bad[5] = FLAG_CTX | FLAG_ENTROPY
    with pytest.raises(ValueError):
        unpack_mbc(bytes(bad))


def test_sidecar_and_embedded_loading(tmp_path, ctx_codec):
    from megabit.codec.train import save_codec

    p = tmp_path / "m.pt"
    save_codec(ctx_codec.model, p, {"bit_probs": torch.from_numpy(ctx_codec.bit_probs)})
    assert load_codec(p).ctx is None
    (tmp_path / "m.ctx.npz").write_bytes(ctx_codec.ctx.to_bytes())
    c = load_codec(p)
    assert c.ctx.digest() == ctx_codec.ctx.digest() and c.model_hash == ctx_codec.model_hash
    (tmp_path / "m.ctx.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="m.ctx.npz"):
        load_codec(p)
    # an alternative beside the default (MODEL.ctx-NAME.npz): chosen for encoding by name, found by
    # digest when decoding, whichever model wrote the file
    (tmp_path / "m.ctx.npz").write_bytes(ctx_codec.ctx.to_bytes())
    other = random_model(ctx_codec.model.cfg.code_channels, 3, 9, scale=100, hidden=1)
    (tmp_path / "m.ctx-small.npz").write_bytes(other.to_bytes())
    c = load_codec(p)
    assert list(c.ctx_alt) == ["small"] and c.ctx_alt["small"].digest() == other.digest()
    img = np.random.default_rng(6).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    small = c.select_ctx("small")
    assert small.ctx.digest() == other.digest() and small.ctx_alt["default"].digest() == ctx_codec.ctx.digest()
    f_small, f_default = compress_image(img, small, 64, "ctx"), compress_image(img, c, 64, "ctx")
    assert f_small[36:40] == other.digest() and f_default[36:40] == ctx_codec.ctx.digest()
    ref = decompress_bytes(compress_image(img, c, 64, "raw"), c)
    for codec in (c, small):
        for f in (f_small, f_default):
            assert np.array_equal(decompress_bytes(f, codec), ref)
    with pytest.raises(ValueError, match="no context model 'nope'"):
        c.select_ctx("nope")
    q = tmp_path / "e.pt"
    save_codec(ctx_codec.model, q, {"bit_probs": torch.from_numpy(ctx_codec.bit_probs),
                                    "ctx_model": ctx_codec.ctx.to_bytes()})
    assert load_codec(q).ctx.digest() == ctx_codec.ctx.digest()


def test_bundled_default_has_context_model_and_keeps_its_hash():
    c = load_codec()
    if c.ctx is None:
        pytest.skip("no context model bundled")
    # the context model is named by its own digest in each payload: the model hash (and so every
    # .mbc written before it existed) is unchanged
    assert c.model_hash == Codec.from_model(c.model, c.name, c.bit_probs).model_hash
    from megabit.data.images import load_rgb
    from importlib.resources import files

    img = load_rgb(files("megabit.assets") / "kodim23.png")[:256, :384]
    ans = compress_image(img, c, 256, "ans")
    ctx = compress_image(img, c, 256, "ctx")
    assert len(ctx) < len(ans)
    assert np.array_equal(decode_header_bits(ctx, c)[1], decode_header_bits(ans, c)[1])
