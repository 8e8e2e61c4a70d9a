"""FMPQ-quantized image codecs as .mbit files (`megabit fmpq pack`): exact round trip, same
bitstreams, every byte accounted, corruption -> one clean error."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from megabit.cli.main import main as megabit_main
from megabit.fmt.mbit import MbitError, read_mbit
from megabit.fmt.mbit_lic import encode_lic_mbit, inspect_lic_mbit, read_lic_mbit, stored_tensors
from megabit.fmt.mbit_resnet import read_resnet_mbit
from megabit.models.lic import LICConfig, build_codec
from megabit.models.lic.checkpoint import save_codec
from megabit.search import QuantPlan, layer_infos, load_quantized, prepare_quantized, save_quantized
from tests.conftest import corrupt_bytes
from tests.search.helpers import write_images


def _quantized(arch="scale-hyperprior", bits=(2, 4, 8, 12), seed=0, N=8, M=8, granularity="channel", act_bits=None):
    """A small codec quantized with a mixed plan, its scales and latent weights moved off their
    absmax start (as QAT leaves them), CDF tables built."""
    torch.manual_seed(seed)
    cfg = LICConfig(arch, N, M)
    net = build_codec(cfg)
    with torch.no_grad():
        net.g_a[-1].weight.mul_(40.0)  # a latent spread enough that the bitstream is not all zeros
    infos = layer_infos(net)
    plan = QuantPlan(infos, {li.name: bits[i % len(bits)] for i, li in enumerate(infos)}, granularity=granularity,
                     act_bits=act_bits)
    prepare_quantized(net, plan, leak=0.01, calib=torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".scale"):
                p.mul_(1 + 0.2 * torch.rand_like(p))
            elif name.endswith(".original"):
                p.add_(0.01 * torch.randn_like(p))
    net.eval()
    net.update(force=True)
    return net, plan, cfg


def _effective_weights(net, plan):
    with torch.no_grad():
        return {n: net.get_submodule(n).weight.clone() for n in plan.bits}


_NET, _PLAN, _CFG = _quantized()
_FILE = encode_lic_mbit(_NET, _PLAN, _CFG.to_dict())


@settings(max_examples=10, deadline=None)
@given(arch=st.sampled_from(["scale-hyperprior", "mean-scale-hyperprior", "cheng2020-anchor"]),
       bits=st.lists(st.integers(2, 12), min_size=1, max_size=4), coder=st.sampled_from(["rans", "tans", "raw"]),
       seed=st.integers(0, 3), granularity=st.sampled_from(["channel", "tensor"]),
       act_bits=st.sampled_from([None, 4, 8]))
def test_roundtrip_gives_the_same_weights_and_bitstreams(arch, bits, coder, seed, granularity, act_bits):
    net, plan, cfg = _quantized(arch, tuple(bits), seed, granularity=granularity, act_bits=act_bits)
    data = encode_lic_mbit(net, plan, cfg.to_dict(), coder=coder)
    back, plan2, head = read_lic_mbit(data)
    assert plan2.bits == plan.bits and plan2.granularity == granularity and plan2.act_bits == act_bits
    assert head["kind"] == "lic"
    w, w2 = _effective_weights(net, plan), _effective_weights(back, plan)
    assert all(torch.equal(w[k], w2[k]) for k in w)
    sd, sd2 = net.state_dict(), back.state_dict()
    for key, q in stored_tensors(net):
        if not q:
            assert torch.equal(sd[key], sd2[key]), key
    if arch != "cheng2020-anchor":  # the autoregressive Python decoder is slow: weights + CDFs suffice there
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            assert net.compress(x)["strings"] == back.compress(x)["strings"]
    for k in ("_quantized_cdf", "_offset", "_cdf_length"):
        assert torch.equal(sd[f"entropy_bottleneck.{k}"], sd2[f"entropy_bottleneck.{k}"])
    ins = inspect_lic_mbit(data)
    assert ins["total_bits"] == 8 * len(data) and ins["n_weights"] == sum(li.n_weights for li in plan.layers)


def test_entropy_coding_beats_raw_and_other_readers_refuse_it():
    net, plan, cfg = _quantized(bits=(2, 3))
    raw, rans = (encode_lic_mbit(net, plan, cfg.to_dict(), coder=c) for c in ("raw", "rans"))
    ir, ia = inspect_lic_mbit(raw), inspect_lic_mbit(rans)
    assert ia["weight_bits"] < ir["weight_bits"] and ir["weight_bits"] >= sum(
        li.n_weights * plan.bits[li.name] for li in plan.layers)
    assert ir["float_section_bytes"] == ia["float_section_bytes"] > 0
    with pytest.raises(MbitError, match="image codec"):
        read_mbit(rans)
    with pytest.raises(MbitError, match="not a ResNet"):
        read_resnet_mbit(rans)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_corruption_is_one_clean_error(data):
    buf = corrupt_bytes(_FILE, data)
    if buf is None:
        return
    with pytest.raises(MbitError):
        read_lic_mbit(buf)


def test_fmpq_pack_cli_and_the_packed_file_runs_as_the_model(tmp_path, capsys):
    q = tmp_path / "q.pt"
    save_quantized(q, _NET, _PLAN, _CFG.to_dict(), lmbda=0.01)
    out = tmp_path / "codec.mbit"
    assert megabit_main(["fmpq", "pack", str(q), "-o", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["file_bytes"] == out.stat().st_size and res["plan_size_bits"] == _PLAN.size_bits
    assert megabit_main(["pack", str(q), "-o", str(tmp_path / "same.mbit"), "--coder", "rans"]) == 0
    assert (tmp_path / "same.mbit").read_bytes() == out.read_bytes()  # `megabit pack` routes it to `fmpq pack`
    capsys.readouterr()
    for cmd in (["inspect", str(out), "--json"], ["budget", str(out), "--json"]):
        assert megabit_main(cmd) == 0
        assert json.loads(capsys.readouterr().out)["total_bits"] == 8 * out.stat().st_size
    assert megabit_main(["inspect", str(out)]) == 0
    assert "quantized scale-hyperprior" in capsys.readouterr().out
    assert megabit_main(["fmpq", "size", str(q), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mbit_file_bytes"] == out.stat().st_size
    # fmpq eval takes the .mbit like the .pt, with the same result
    data = write_images(tmp_path / "img", n=1)
    for src, name in ((q, "a.json"), (out, "b.json")):
        assert megabit_main(["fmpq", "eval", "--quantized", str(src), "--data", str(data),
                             "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["mean_bpp"] == b["mean_bpp"] and a["mean_psnr"] == b["mean_psnr"] and a["size_bits"] == b["size_bits"]
    m2, plan2, _ = load_quantized(out)
    assert plan2.bits == _PLAN.bits
    # bad input: one line, exit 2, nothing written
    (tmp_path / "cut.mbit").write_bytes(out.read_bytes()[:-7])
    capsys.readouterr()
    for cmd in (["inspect", str(tmp_path / "cut.mbit")], ["fmpq", "size", str(tmp_path / "cut.mbit")],
                ["fmpq", "pack", str(tmp_path / "cut.mbit"), "-o", str(tmp_path / "x.mbit")]):
        assert megabit_main(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("megabit: error:"), err
    assert not (tmp_path / "x.mbit").exists()
    ck = tmp_path / "float.pt"  # a float codec checkpoint is not a quantized codec
    save_codec(ck, build_codec(_CFG), _CFG, lmbda=0.01)
    assert megabit_main(["fmpq", "pack", str(ck), "-o", str(tmp_path / "y.mbit")]) == 2
    assert not (tmp_path / "y.mbit").exists()


def test_a_config_that_does_not_match_the_sections_is_refused():
    other, plan, cfg = _quantized(N=12, M=8)
    data = encode_lic_mbit(other, plan, cfg.to_dict())
    head = json.loads(read_container_config(_FILE))
    head2 = json.loads(read_container_config(data))
    assert head["config"] != head2["config"]
    # splice: the small model's sections under the bigger model's config
    from megabit.fmt.mbit import Section, _container, read_container
    from megabit.fmt import spec as S

    _, secs, _, _ = read_container(_FILE)
    _, secs2, _, _ = read_container(data)
    spliced = _container([Section(S.SECTION_CONFIG, 0, 0, secs2[0].payload)] + secs[1:])
    with pytest.raises(MbitError):
        read_lic_mbit(spliced)
    assert np.frombuffer(_FILE[:4], dtype=np.uint8).tobytes() == b"MBIT"


def read_container_config(data: bytes) -> str:
    from megabit.fmt.mbit import read_container

    return read_container(data)[1][0].payload.decode()
