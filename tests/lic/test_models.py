import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from megabit.models.lic import (
    Cheng2020Anchor,
    LICConfig,
    MeanScaleHyperprior,
    ScaleHyperprior,
    build_codec,
)
from megabit.models.lic.checkpoint import load_codec, save_codec


def _gdn_keys(prefix):
    return [f"{prefix}.beta", f"{prefix}.gamma", f"{prefix}.beta_reparam.pedestal",
            f"{prefix}.beta_reparam.lower_bound.bound", f"{prefix}.gamma_reparam.pedestal",
            f"{prefix}.gamma_reparam.lower_bound.bound"]


def _wb(prefix):
    return [f"{prefix}.weight", f"{prefix}.bias"]


def compressai_bmshj2018_hyperprior_keys():
    """The state_dict keys of compressai.models.ScaleHyperprior, written out from its layer layout."""
    keys = []
    for i in range(5):  # filters (3, 3, 3, 3): 5 dense layers, 4 gates
        keys += [f"entropy_bottleneck._matrix{i}", f"entropy_bottleneck._bias{i}"]
        if i < 4:
            keys.append(f"entropy_bottleneck._factor{i}")
    keys += ["entropy_bottleneck.quantiles", "entropy_bottleneck.target", "entropy_bottleneck._offset",
             "entropy_bottleneck._quantized_cdf", "entropy_bottleneck._cdf_length",
             "entropy_bottleneck.likelihood_lower_bound.bound"]
    for t in ("g_a", "g_s"):
        for i in (0, 2, 4, 6):
            keys += _wb(f"{t}.{i}")
        for i in (1, 3, 5):
            keys += _gdn_keys(f"{t}.{i}")
    for t in ("h_a", "h_s"):
        for i in (0, 2, 4):
            keys += _wb(f"{t}.{i}")
    keys += ["gaussian_conditional._offset", "gaussian_conditional._quantized_cdf", "gaussian_conditional._cdf_length",
             "gaussian_conditional.scale_table", "gaussian_conditional.scale_bound",
             "gaussian_conditional.likelihood_lower_bound.bound", "gaussian_conditional.lower_bound_scale.bound"]
    return keys


def test_scale_hyperprior_has_compressai_key_layout():
    assert set(ScaleHyperprior(8, 8).state_dict()) == set(compressai_bmshj2018_hyperprior_keys())


def test_cheng_anchor_key_names():
    keys = set(Cheng2020Anchor(8).state_dict())
    for k in ["g_a.0.conv1.weight", "g_a.0.gdn.beta", "g_a.0.skip.weight", "g_a.6.weight",
              "g_s.1.subpel_conv.0.weight", "g_s.1.igdn.gamma", "g_s.1.upsample.0.weight", "g_s.7.0.weight",
              "h_s.2.0.weight", "h_s.8.weight", "context_prediction.weight", "context_prediction.mask",
              "entropy_parameters.4.weight", "h_a.8.weight"]:
        assert k in keys, k


def test_loads_a_compressai_style_state_dict_with_trained_cdfs(tmp_path):
    """A checkpoint whose entropy tables have other sizes (as after CompressAI's update()) loads strictly,
    legacy ParameterList names of the bottleneck included."""
    src = ScaleHyperprior(8, 12)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["gaussian_conditional._quantized_cdf"] = torch.randint(0, 9, (64, 3133), dtype=torch.int32)
    sd["gaussian_conditional._offset"] = torch.zeros(64, dtype=torch.int32)
    sd["gaussian_conditional._cdf_length"] = torch.full((64,), 3, dtype=torch.int32)
    sd["gaussian_conditional.scale_table"] = torch.linspace(0.11, 256, 64)
    for i in range(5):
        sd[f"entropy_bottleneck._matrices.{i}"] = sd.pop(f"entropy_bottleneck._matrix{i}")
    dst = ScaleHyperprior(8, 12)
    dst.load_state_dict(sd)
    assert dst.gaussian_conditional._quantized_cdf.shape == (64, 3133)
    assert torch.equal(dst.entropy_bottleneck._matrix2, src.entropy_bottleneck._matrix2)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "compressai.pth.tar")
    m, meta = load_codec(tmp_path / "compressai.pth.tar", LICConfig("scale-hyperprior", 8, 12))
    assert meta["format"] == "state_dict"
    with pytest.raises(ValueError, match="does not match"):
        load_codec(tmp_path / "compressai.pth.tar", LICConfig("scale-hyperprior", 8, 16))
    with pytest.raises(ValueError, match="needs --arch"):
        load_codec(tmp_path / "compressai.pth.tar")


def test_checkpoint_roundtrip(tmp_path):
    cfg = LICConfig("mean-scale-hyperprior", 8, 8)
    net = build_codec(cfg)
    save_codec(tmp_path / "c.pt", net, cfg, lmbda=0.01)
    net2, meta = load_codec(tmp_path / "c.pt")
    assert meta["lmbda"] == 0.01 and isinstance(net2, MeanScaleHyperprior)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError):
        load_codec(tmp_path / "bad.pt")


@pytest.mark.parametrize("arch", ["scale-hyperprior", "mean-scale-hyperprior", "cheng2020-anchor"])
def test_forward_contract(arch):
    net = build_codec(LICConfig(arch, 8, 8)).train()
    x = torch.rand(2, 3, 64, 64)
    out = net(x)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape[1] == 8 and out["likelihoods"]["z"].shape[-1] == 1
    assert all(((l > 0) & (l <= 1)).all() for l in out["likelihoods"].values())
    assert float(net.aux_loss().detach()) > 0


def _roundtrip_y(net, x):
    """y_hat the encoder used and the one decoded from the strings."""
    enc = net.compress(x)
    y = net.g_a(x)
    z = net.h_a(torch.abs(y) if type(net) is ScaleHyperprior else y)
    z_hat_dec = net.entropy_bottleneck.decompress(enc["strings"][1], enc["shape"])
    assert torch.equal(z_hat_dec, net.entropy_bottleneck.quantize(z, "dequantize", net.entropy_bottleneck._get_medians()))
    gc = net.gaussian_conditional
    if isinstance(net, Cheng2020Anchor):
        params = net.h_s(z_hat_dec)
        y_enc = torch.cat([net._compress_ar(y[i:i + 1], params[i:i + 1])[1] for i in range(y.size(0))])
        H, W = y.shape[-2:]
        y_dec = torch.cat([net._decompress_ar(s, params[i:i + 1], H, W) for i, s in enumerate(enc["strings"][0])])
    elif isinstance(net, MeanScaleHyperprior):
        scales, means = net.h_s(z_hat_dec).chunk(2, 1)
        y_enc = gc.quantize(y, "dequantize", means)
        y_dec = gc.decompress(enc["strings"][0], gc.build_indexes(scales), means=means)
    else:
        y_enc = gc.quantize(y, "dequantize")
        y_dec = gc.decompress(enc["strings"][0], gc.build_indexes(net.h_s(z_hat_dec)))
    return enc, y_enc, y_dec


_NETS = {}


def _net(arch):
    if arch not in _NETS:
        torch.manual_seed(1)
        net = build_codec(LICConfig(arch, 8, 12)).eval()
        net.update()
        _NETS[arch] = net
    return _NETS[arch]


@given(arch=st.sampled_from(["scale-hyperprior", "mean-scale-hyperprior", "cheng2020-anchor"]),
       b=st.integers(1, 2), h=st.sampled_from([64, 128]), w=st.sampled_from([64, 128]), seed=st.integers(0, 2**16),
       gain=st.floats(0.1, 20.0))
@settings(max_examples=12, deadline=None)
def test_compress_decompress_reproduces_y_hat_exactly(arch, b, h, w, seed, gain):
    net = _net(arch)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)
    with torch.no_grad():
        # scale the latent so the escape (out-of-table) path is exercised too
        enc, y_enc, y_dec = _roundtrip_y(net, x * gain)
        assert torch.equal(y_enc, y_dec)
        out = net.decompress(enc["strings"], enc["shape"])
        assert out["x_hat"].shape == x.shape
        assert torch.equal(out["x_hat"], net.g_s(y_enc).clamp(0, 1))


def test_compress_rejects_bad_shapes():
    net = _net("scale-hyperprior")
    with pytest.raises(ValueError, match="multiples of 64"):
        net.compress(torch.rand(1, 3, 65, 64))
    with pytest.raises(ValueError, match="strings"):
        net.decompress([b"x"], (1, 1))
