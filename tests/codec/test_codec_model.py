import pytest
import torch

from megabit.models.patch_codec import (BUDGET_BITS, PatchCodec, PatchCodecConfig, budget, patchify, rate_mask,
                                        unpatchify)

from .conftest import make_tiny_codec


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 64, 96)
    p = patchify(x)
    assert p.shape == (12, 3, 32, 32)
    assert torch.equal(p[1], x[0, :, :32, 32:64])  # row-major patch order
    assert torch.equal(unpatchify(p, 2, 2, 3), x)
    with pytest.raises(ValueError):
        patchify(torch.zeros(1, 3, 33, 32))


def test_default_config_rates_and_budget():
    cfg = PatchCodecConfig()
    assert cfg.grid == 4 and cfg.max_bits == 512
    assert [cfg.channels_for(r) for r in cfg.rates] == [8, 16, 32]
    b = budget(cfg)
    assert b["fits"] and b["total_bits"] <= BUDGET_BITS
    assert b["total_bits"] == sum(r["bits"] for r in b["layers"])
    # first layer: 32 x 3 x 3 x 3 quinary weights at 3 bits + 4-bit shift + 32 x 12-bit offsets
    assert b["layers"][0]["bits"] == 32 * 27 * 3 + 4 + 32 * 12
    assert budget(PatchCodec(cfg)) == b
    with pytest.raises(ValueError):
        cfg.channels_for(100)


def test_config_roundtrip():
    cfg = PatchCodecConfig().with_(norm="bsn")
    assert PatchCodecConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        PatchCodecConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_forward_contract_and_rate_mask():
    m = make_tiny_codec(bsn=False)
    out = m(torch.randint(0, 256, (2, 3, 64, 64)).float(), rate_bits=32)
    assert out["x_hat"].shape == (2, 3, 64, 64) and set(out["codes"].unique().tolist()) <= {-1.0, 1.0}
    mask = rate_mask(torch.tensor([32, 64]), m.cfg, 2)
    assert mask[:, :, 0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_refiner_starts_as_identity():
    m = PatchCodec(PatchCodecConfig.tiny()).eval()
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(m.refine(x, 0.5), x)


def test_bsn_encoder_is_integer_exact_and_keeps_codes():
    torch.manual_seed(0)
    m = make_tiny_codec(bsn=False)
    x = torch.randint(0, 256, (16, 3, 32, 32)).float()
    with torch.no_grad():
        feats = m.g_a.features(x)
        z_bn = m.g_a.code.pre_sign(feats)
        m.g_a.convert_to_bsn()
        z_bsn = m.g_a.code.pre_sign(feats)
        feats_bsn = m.g_a.features(x)
    # the code layer's BN -> BSN conversion keeps the sign up to the integer rounding of the offset
    assert ((z_bn >= 0) == (z_bsn >= 0)).float().mean() > 0.95
    # integer path: block outputs are HWMSB codes, so every accumulator is an exact integer
    assert torch.equal(feats_bsn, feats_bsn.round()) and feats_bsn.min() >= 0 and feats_bsn.max() <= 3
    img = torch.randint(0, 256, (1, 3, 64, 96), generator=torch.Generator().manual_seed(1)).float()
    bits1 = m.compress(img, 64)
    torch.set_num_threads(2)
    try:
        bits2 = m.compress(img, 64)
    finally:
        torch.set_num_threads(1)
    assert bits1.dtype == torch.uint8 and bits1.shape == (6, 64) and torch.equal(bits1, bits2)


def test_calibrated_encoder_conversion_keeps_the_bn_bits_better_than_the_quantile():
    import copy

    torch.manual_seed(0)
    m = make_tiny_codec(bsn=False)
    for mod in m.g_a.modules():  # channel scales spread over 4x, as after training
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-0.3, 0.6)
    calib = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    m.train()
    with torch.no_grad():
        m.g_a(calib.float())
    m.eval()
    x = torch.randint(0, 256, (32, 3, 32, 32), generator=torch.Generator().manual_seed(2)).float()
    with torch.no_grad():
        ref = m.g_a(x)
        q = copy.deepcopy(m.g_a).convert_to_bsn()
        f = copy.deepcopy(m.g_a).convert_to_bsn(calib)
        mism_q, mism_f = float((q(x) != ref).float().mean()), float((f(x) != ref).float().mean())
        feats = f.features(x)
    assert f.cfg.norm == "bsn" and not f.training and len(f.bsn_fit) == len(m.g_a.blocks) + 1
    assert f.bsn_fit[-1]["shift"] == f.bsn_fit[-1]["quantile_shift"]  # the code layer keeps its shift
    assert mism_f < mism_q, (mism_f, mism_q)
    assert torch.equal(feats, feats.round()) and feats.min() >= 0 and feats.max() <= 3
    with pytest.raises(ValueError, match="calibration patches"):
        copy.deepcopy(m.g_a).convert_to_bsn(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))


def test_compress_decompress_shapes():
    m = make_tiny_codec()
    bits = m.compress(torch.zeros(1, 3, 64, 32), 32)
    assert bits.shape == (2, 32)
    y = m.decompress(bits, 2, 1, 32)
    assert y.shape == (1, 3, 64, 32)


def _randomize_context(m: PatchCodec) -> None:
    with torch.no_grad():
        for p in m.ctx.out.parameters():
            p.normal_(0, 0.1)


def test_code_context_starts_at_zero_and_sees_the_neighbours():
    """A model extended with the code context decodes as before until trained; once trained, a
    patch's decode depends on its neighbours' codes (and only through the context module)."""
    from megabit.codec.train import _with_code_context

    base = make_tiny_codec()
    m = _with_code_context(base, 8).eval()
    assert PatchCodecConfig.from_dict(m.cfg.to_dict()) == m.cfg and m.cfg.code_context == 8
    x = torch.randint(0, 256, (1, 3, 64, 96)).float()
    with torch.no_grad():
        assert torch.equal(m(x, 32)["x_hat"], base(x, 32)["x_hat"])
    _randomize_context(m)
    codes = torch.where(torch.rand(6, 4, 4, 4) > 0.5, 1.0, -1.0)
    with torch.no_grad():
        a = m.decode_patches(codes, 64, (1, 2, 3))
        flipped = codes.clone()
        flipped[1] = -flipped[1]  # patch (0, 1): its neighbours (0, 0), (0, 2), (1, x) must change
        b = m.decode_patches(flipped, 64, (1, 2, 3))
        assert (a[0] - b[0]).abs().max() > 0 and (a[4] - b[4]).abs().max() > 0
        assert torch.equal(base.decode_patches(codes, 64, (1, 2, 3))[0], base.decode_patches(flipped, 64, (1, 2, 3))[0])
        # chunked g_s gives the same patches; every patch alone differs from the frame decode
        assert torch.allclose(m.decode_patches(codes, 64, (1, 2, 3), chunk=4), a, atol=1e-6)
        assert not torch.allclose(m.decode_patches(codes, 64), a)
        with pytest.raises(ValueError, match="grid"):
            m.decode_patches(codes, 64, (1, 2, 2))
    with pytest.raises(ValueError, match="already"):
        _with_code_context(m, 8)
