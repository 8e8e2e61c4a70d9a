"""Encoder-side code search (megabit.codec.search): never worse than the encoder, same format."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from megabit.cli.main import main as megabit_main
from megabit.codec.api import _to_tensor, compress_image, decode_header_bits, decompress_bytes, encode_bits_of
from megabit.codec.search import SearchConfig, patch_mse, search_bits
from megabit.data.images import pad_to_multiple

from megabit.codec import context_model as cmod
from megabit.codec.context_model import ideal_bits
from megabit.codec.search import rd_cost

from ..conftest import load_recipe
from .test_codec_context import random_model


def _smooth(h, w, seed=0):
    """A smooth image (random low-frequency field): something a decoder can approach."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 3, 3, generator=g) * 255
    return torch.nn.functional.interpolate(low, (h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0) \
        .round().clamp(0, 255).to(torch.uint8).numpy()


def test_off_is_the_encoder(tiny_codec):
    img = _smooth(64, 96)
    b0, _, _ = encode_bits_of(img, tiny_codec, 64)
    for off in (None, 0, SearchConfig()):
        assert np.array_equal(encode_bits_of(img, tiny_codec, 64, off)[0], b0)


def test_never_worse_per_patch_and_better_overall(tiny_codec):
    img = _smooth(96, 128, seed=3)
    x = _to_tensor(pad_to_multiple(img, 32))
    b0, _, _ = encode_bits_of(img, tiny_codec, 64)
    b1 = search_bits(tiny_codec, x, b0, 64, SearchConfig(steps=15, chunk=5))  # chunks: 12 patches in 3 batches
    e0, e1 = patch_mse(tiny_codec, x, b0, 64), patch_mse(tiny_codec, x, b1, 64)
    assert np.all(e1 <= e0 + 1e-7)
    assert e1.sum() < e0.sum() and (b1 != b0).any()
    # chunking is exact: one batch gives the same bits
    assert np.array_equal(b1, search_bits(tiny_codec, x, b0, 64, SearchConfig(steps=15, chunk=1024)))


def test_model_left_as_found(tiny_codec):
    m = tiny_codec.model
    req = [p.requires_grad for p in m.parameters()]
    img = _smooth(32, 32)
    encode_bits_of(img, tiny_codec, 32, 3)
    assert [p.requires_grad for p in m.parameters()] == req and not m.training


@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), rate=st.sampled_from([32, 64]), steps=st.integers(1, 4),
       entropy=st.sampled_from(["raw", "ans", "auto"]), seed=st.integers(0, 9))
def test_search_roundtrip(tiny_codec, h, w, rate, steps, entropy, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    bits, _, _ = encode_bits_of(img, tiny_codec, rate, steps)
    data = compress_image(img, tiny_codec, rate, entropy, search=steps)
    _, dec, _ = decode_header_bits(data, tiny_codec)
    assert np.array_equal(dec, bits)
    assert decompress_bytes(data, tiny_codec).shape == (h, w, 3)


def test_bad_settings():
    for bad in ({"steps": -1}, {"steps": 1.5}, {"lr": 0}, {"init": -1}, {"chunk": 0}):
        with pytest.raises(ValueError):
            SearchConfig(**bad)


def test_cli(tmp_path, tiny_model_file, capsys, monkeypatch):
    from PIL import Image

    from megabit.cli import compress

    monkeypatch.setattr(compress, "RATES", {"0.0625": 64})  # the tiny model's rates

    Image.fromarray(_smooth(40, 64)).save(tmp_path / "a.png")
    assert megabit_main(["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.mbc"), "--rate", "0.0625",
                         "--model", str(tiny_model_file), "--search", "3"]) == 0
    assert megabit_main(["decompress", str(tmp_path / "a.mbc"), "-o", str(tmp_path / "a_out.png"),
                         "--model", str(tiny_model_file)]) == 0
    capsys.readouterr()
    assert megabit_main(["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.mbc"), "--rate", "0.0625",
                         "--model", str(tiny_model_file), "--search", "-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("megabit: error:") and not (tmp_path / "b.mbc").exists()
    for extra in (["--rd-lambda", "0.001"], ["--search", "2", "--rd-lambda", "0.001"]):  # no search / no context model
        assert megabit_main(["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.mbc"), "--rate", "0.0625",
                             "--model", str(tiny_model_file), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "rate-distortion search" in err[0] and not (tmp_path / "b.mbc").exists()
    # eval-codec --search pairs every row with the encoder-only result of the same image
    d = tmp_path / "ev"
    d.mkdir()
    Image.fromarray(_smooth(64, 64, seed=2)).save(d / "x.png")
    js = tmp_path / "r.json"
    assert megabit_main(["eval-codec", "--data-root", str(d), "--model", str(tiny_model_file), "--rates", "64",
                         "--anchors", "jpeg", "--search", "5", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["model"]["search"]["steps"] == 5
    row = r["per_image"]["64"][0]
    assert {"psnr", "bits_changed", "ideal_bpp_model"} <= set(row["no_search"])


@pytest.mark.parametrize("rate", [128, 512])
def test_bundled_model(rate):
    from megabit.codec.api import load_codec

    c = load_codec()
    img = _smooth(64, 96, seed=4)
    x = _to_tensor(pad_to_multiple(img, 32))
    b0, _, _ = encode_bits_of(img, c, rate)
    b1 = search_bits(c, x, b0, rate, SearchConfig(steps=20))
    e0, e1 = patch_mse(c, x, b0, rate), patch_mse(c, x, b1, rate)
    assert np.all(e1 <= e0 + 1e-7) and e1.sum() < e0.sum()


def _load_distill_recipe():
    return load_recipe("codec_search_distill")


@pytest.mark.parametrize("distill", ["0.05", "0"])
def test_search_distill_recipe_trains_only_the_encoder_and_resumes(tmp_path, tiny_model_file, distill):
    import json

    from PIL import Image

    from megabit.codec.train import load_init

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    recipe = _load_distill_recipe()
    out = tmp_path / "run"
    argv = ["--data-root", str(photos), "--out", str(out), "--init", str(tiny_model_file), "--minutes", "0.02",
            "--batch", "4", "--search-steps", "2", "--n-val", "2", "--val-every-s", "0.2", "--distill", distill]
    assert recipe.main(argv) == 0
    res = json.loads((out / "result.json").read_text())
    new, obj = load_init(str(out / "model.pt"))
    assert res["steps"] >= 1 and set(res["val_psnr"]) == {str(r) for r in new.cfg.rates}
    old, _ = load_init(str(tiny_model_file))
    dec = [k for k in old.state_dict() if not k.startswith("g_a.")]
    assert all(torch.equal(old.state_dict()[k], new.state_dict()[k]) for k in dec)  # decoder frozen
    assert any(not torch.equal(old.state_dict()[k], new.state_dict()[k]) for k in old.state_dict() if k.startswith("g_a."))
    assert obj["bit_probs"].shape == (new.cfg.max_bits, 6)
    # a longer budget resumes from the checkpoint instead of starting over
    steps = res["steps"]
    argv[argv.index("--minutes") + 1] = "0.04"
    assert recipe.main(argv + ["--resume"]) == 0
    assert json.loads((out / "result.json").read_text())["steps"] > steps


# ------------------------------------------------------------ rate-distortion search (lmbda) ---


@pytest.fixture(scope="module")
def rd_codec(tiny_codec):
    import dataclasses

    return dataclasses.replace(tiny_codec, ctx=random_model(tiny_codec.model.cfg.code_channels, 3, 1, scale=100, hidden=2))


@settings(max_examples=15, deadline=None)
@given(gh=st.integers(1, 3), gw=st.integers(1, 3), k=st.integers(1, 4), p=st.floats(0.05, 0.95),
       seed=st.integers(0, 2**31), hidden=st.sampled_from([0, 2]))
def test_rate_fn_is_the_code_length(gh, gw, k, p, seed, hidden):
    """The differentiable rate equals the exact code length up to the integer rounding of the logits,
    per patch, and has a gradient."""
    cm = random_model(4, 3, seed % 1000, scale=100, hidden=hidden)
    bits = (np.random.default_rng(seed).random((gh * gw, 16 * k)) < p).astype(np.uint8)
    codes = (torch.from_numpy(bits).float().reshape(gh * gw, k, 4, 4) * 2 - 1).requires_grad_()
    per_patch = cm.rate_fn(gh, gw)(codes)
    assert per_patch.shape == (gh * gw,)
    exact = [cmod.ideal_bits(bits, gh, gw, cm)]
    assert float(per_patch.detach().sum()) == pytest.approx(exact[0], rel=0.02, abs=0.5)
    per_patch.sum().backward()
    assert codes.grad is not None and torch.isfinite(codes.grad).all()
    with pytest.raises(ValueError, match="do not match"):
        cm.rate_fn(gh + 1, gw)(codes.detach())


def test_rd_search_lowers_the_rd_cost(rd_codec):
    img = _smooth(96, 128, seed=3)
    x = _to_tensor(pad_to_multiple(img, 32))
    b0, gh, gw = encode_bits_of(img, rd_codec, 64)
    costs, rates = {}, {}
    for lam in (1e-4, 1e-2):
        b = search_bits(rd_codec, x, b0, 64, SearchConfig(steps=15, lmbda=lam))
        costs[lam] = (rd_cost(rd_codec, x, b, 64, lam), rd_cost(rd_codec, x, b0, 64, lam))
        rates[lam] = ideal_bits(b, gh, gw, rd_codec.ctx)
    for lam, (after, before) in costs.items():
        assert after <= before + 1e-9, lam
    # the tiny decoder barely depends on its code, so both are rate-dominated: much cheaper codes
    start = ideal_bits(b0, gh, gw, rd_codec.ctx)
    assert max(rates.values()) < 0.8 * start
    # the distortion-only search does not look at the rate
    plain = search_bits(rd_codec, x, b0, 64, SearchConfig(steps=15))
    assert ideal_bits(plain, gh, gw, rd_codec.ctx) > max(rates.values())


def test_rd_search_roundtrip_and_errors(rd_codec, tiny_codec):
    img = _smooth(40, 70, seed=5)
    cfg = SearchConfig(steps=3, lmbda=1e-3)
    bits, _, _ = encode_bits_of(img, rd_codec, 64, cfg)
    data = compress_image(img, rd_codec, 64, "ctx", search=cfg)
    assert np.array_equal(decode_header_bits(data, rd_codec)[1], bits)
    with pytest.raises(ValueError, match="context model"):
        encode_bits_of(img, tiny_codec, 64, cfg)
    for bad in ({"steps": 0, "lmbda": 1e-3}, {"steps": 3, "lmbda": 0.0}, {"steps": 3, "lmbda": -1.0}):
        with pytest.raises(ValueError, match="lambda"):
            SearchConfig(**bad)
