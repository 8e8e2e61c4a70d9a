"""C99 export: bit-exact against IntegerNQE, memory map against `size`, clear refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from megabit.export import IntegerNQE
from megabit.export.c import (CFLAGS, check_exportable, compile_c, export_c, find_cc, object_sizes, plan_model,
                              run_c)
from megabit.export.c.emit import render_model_c
from megabit.export.c.memory import layout
from megabit.export.integer import IntHead, IntLayer
from megabit.fmt.mbit import encode_mbit, read_mbit
from megabit.hub import bundled_classifier_path
from megabit.models import LayerSpec, NQEConfig

from ..conftest import make_bsn_model, tiny_cfg

needs_cc = pytest.mark.skipif(find_cc() is None, reason="no C compiler")


@pytest.fixture(scope="module")
def net() -> IntegerNQE:
    return IntegerNQE.from_model(make_bsn_model(seed=1))


def _images(n: int, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)
    x[:1] = 0  # extremes: all-dark and all-bright images
    x[1:2] = 255
    return x


def random_integer_net(cfg: NQEConfig, seed: int) -> IntegerNQE:
    """Random codes, shifts and offsets (no training): activations spread over 0..3."""
    rng = np.random.default_rng(seed)
    layers, cin = [], cfg.in_channels
    for i, L in enumerate(cfg.layers):
        codes = rng.choice(_grid(L.levels), size=(L.out, cin // L.groups, L.kernel, L.kernel)).astype(np.int8)
        shift = int(rng.integers(6, 10)) if i == 0 else int(rng.integers(0, 5))
        offsets = rng.integers(-min(2000, 1 << shift), min(2000, 2 << shift) + 1, L.out)
        layers.append(IntLayer(codes, L.levels, L.groups, L.pool, shift, offsets.astype(np.int64)))
        cin = L.out
    head = IntHead(rng.choice(_grid(cfg.head_levels), size=(cfg.num_classes, cin)).astype(np.int8), cfg.head_levels,
                   rng.integers(-3000, 3000, cfg.num_classes).astype(np.int64))
    return IntegerNQE(cfg, layers, head)


def _grid(levels: int) -> list[int]:
    from megabit.quant.weight import code_range

    return code_range(levels)


def _check_exact(net: IntegerNQE, mbit: bytes, out: Path, x: np.ndarray, flags=CFLAGS, **kw) -> dict:
    res = export_c(mbit, out, image_size=x.shape[2:], **kw)
    cls, logits = run_c(compile_c(out, flags), x)
    ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(logits, ref)
    first_max = (ref == ref.max(1, keepdims=True)).argmax(1)
    np.testing.assert_array_equal(cls, first_max)
    return res.memory_map


# --- refusals (no compiler needed) ----------------------------------------------------------
@pytest.mark.parametrize("cfg, msg", [
    (tiny_cfg(act_bits=3), "2-bit activations"),
    (tiny_cfg(act_mode="round"), "floor"),
    (NQEConfig(layers=(LayerSpec(8, kernel=2),)), "odd kernel"),
    (NQEConfig(layers=(LayerSpec(8, levels=300),)), "2..255"),
    (NQEConfig(layers=(LayerSpec(8, levels=200),)), "beyond int8"),
    (NQEConfig(layers=(LayerSpec(8, levels=1),)), "2..255"),
    (NQEConfig(layers=(LayerSpec(8, pool=True),) * 6), "max-pool of a 1x1"),
])
def test_unsupported_config_is_refused(cfg, msg):
    with pytest.raises(ValueError, match=msg):
        check_exportable(cfg)


def test_refusal_happens_at_export_before_writing(net, tmp_path):
    f = read_mbit(encode_mbit(net, coder="tans", raw_fallback=False))
    bad = dataclasses.replace(f, config=f.config.with_(layers=(dataclasses.replace(f.config.layers[0], kernel=4),)
                                                       + f.config.layers[1:]))
    with pytest.raises(ValueError, match="odd kernel"):
        export_c(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    round_mode = encode_mbit(IntegerNQE(net.cfg.with_(act_mode="round"), net.layers, net.head), coder="raw")
    with pytest.raises(ValueError, match="act_mode='round'"):
        export_c(round_mode, tmp_path / "out")


def test_rans_is_refused_with_a_clear_message(net, tmp_path):
    with pytest.raises(ValueError, match="rANS-coded weights are not supported.*--coder tans"):
        export_c(encode_mbit(net, coder="rans", raw_fallback=False), tmp_path / "out")


def test_descriptors_keep_the_coded_form(net):
    data = encode_mbit(net, coder="tans", n_streams=3, raw_fallback=False)
    m = plan_model(data)
    f = read_mbit(data)
    for L, s in zip(m.layers, f.sections[1:]):
        assert L.n_streams == 3 and len(L.init_states) == 3
        assert s.payload.endswith(L.stream) and len(L.stream) == (L.stream_bits + 7) // 8
    lay = layout(m)
    assert len(lay.weight_data) == sum(len(L.stream) for L in m.layers)
    # ping-pong: input 3x32x32 and conv outputs 8x16x16, 16x8x8, 16x4x4
    assert lay.buf == (max(3 * 32 * 32, 16 * 8 * 8), max(8 * 16 * 16, 16 * 4 * 4))
    assert lay.wscratch == max(3 * 9, 4 * 9, 8 * 9, 16)  # one filter (cin/groups * k * k) or one head row
    assert lay.acc_words == 32 * 32


def test_memory_map_itemizes_flash_and_ram(net, tmp_path):
    mm = export_c(encode_mbit(net, coder="raw"), tmp_path).memory_map
    on_disk = json.loads((tmp_path / "memory_map.json").read_text())
    assert on_disk == mm
    assert mm["flash"]["data_total"] == sum(mm["flash"]["data"].values())
    assert mm["ram"]["total"] == sum(mm["ram"]["buffers"].values())
    assert mm["flash"]["data"]["weights"] == sum(r["coded_bytes"] for r in mm["layers"])
    assert mm["budget"]["flash_data_fits"]
    assert [r["name"] for r in mm["layers"]] == ["blocks.0", "blocks.1", "blocks.2", "head"]


def test_cli_writes_the_project(net, tmp_path, capsys):
    from megabit.cli.export_c import main

    p = tmp_path / "m.mbit"
    p.write_bytes(encode_mbit(net, coder="tans", raw_fallback=False))
    assert main([str(p), "-o", str(tmp_path / "c"), "--json"]) == 0
    mm = json.loads(capsys.readouterr().out)
    assert mm["lut"] == "flash"
    assert sorted(q.name for q in (tmp_path / "c").iterdir()) == sorted(
        ["main.c", "mb_runtime.c", "mb_runtime.h", "memory_map.json", "model.c", "model.h"])
    assert main([str(p), "-o", str(tmp_path / "c2"), "--lut", "ram"]) == 0
    assert "fits" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    from megabit.cli.main import main

    assert main(["export-c", str(tmp_path / "missing.mbit"), "-o", str(tmp_path / "c")]) == 2
    assert "no such file" in capsys.readouterr().err
    if bundled_classifier_path() is None:
        assert main(["export-c", "nqe-1mbit", "-o", str(tmp_path / "c")]) == 2
        assert "no trained model is bundled" in capsys.readouterr().err


# --- compiled -------------------------------------------------------------------------------
@pytest.mark.cc
@needs_cc
@pytest.mark.parametrize("coder, streams, lut", [("tans", 1, "flash"), ("tans", 4, "ram"), ("raw", 1, "flash")])
def test_c_logits_are_bit_exact(net, tmp_path, coder, streams, lut):
    _check_exact(net, encode_mbit(net, coder=coder, n_streams=streams, raw_fallback=False), tmp_path, _images(300), lut=lut)


@pytest.mark.cc
@needs_cc
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
def test_c_matches_random_architectures(tmp_path_factory, seed, data):
    n_layers = data.draw(st.integers(1, 3))
    specs = []
    for _ in range(n_layers):
        groups = data.draw(st.sampled_from([1, 2]))
        specs.append(LayerSpec(out=4 * groups * data.draw(st.integers(1, 2)), levels=data.draw(st.integers(2, 7)),
                               groups=groups, kernel=data.draw(st.sampled_from([1, 3, 5])), pool=data.draw(st.booleans())))
    in_c = data.draw(st.sampled_from([2, 4]))
    cfg = NQEConfig(layers=tuple(specs), in_channels=in_c, num_classes=data.draw(st.integers(2, 5)),
                    head_levels=data.draw(st.integers(2, 5)), norm="bsn")
    h, w = data.draw(st.integers(8, 13)), data.draw(st.integers(8, 13))  # odd sizes: floor pooling
    net = random_integer_net(cfg, seed)
    coder = data.draw(st.sampled_from(["tans", "raw"]))
    mbit = encode_mbit(net, coder=coder, n_streams=data.draw(st.integers(1, 5)),
                       table_log=data.draw(st.sampled_from([5, 8, 11])) if coder == "tans" else None, raw_fallback=False)
    out = tmp_path_factory.mktemp("arch")
    _check_exact(net, mbit, out, _images(40, in_c, h, w, seed % 1000), lut=data.draw(st.sampled_from(["flash", "ram"])))


def _sanitizer_flags_or_skip(tmp_path: Path) -> tuple[str, ...]:
    flags = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fno-omit-frame-pointer",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=all")
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "p.c").write_text("int main(void) { return 0; }\n")
    try:
        subprocess.run([find_cc(), *flags, "p.c", "-o", "p"], cwd=probe, check=True, capture_output=True)
        subprocess.run([str(probe / "p")], check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("this toolchain cannot build/run sanitized binaries")
    return flags


@pytest.mark.cc
@needs_cc
def test_sanitizers_run_clean(net, tmp_path):
    flags = _sanitizer_flags_or_skip(tmp_path)
    for coder, lut in (("tans", "ram"), ("raw", "flash")):
        _check_exact(net, encode_mbit(net, coder=coder, n_streams=2, raw_fallback=False), tmp_path / coder, _images(30), flags, lut=lut)


@pytest.mark.cc
@needs_cc
def test_memory_map_matches_object_sizes(net, tmp_path):
    for coder, lut in (("tans", "flash"), ("tans", "ram")):
        d = tmp_path / f"{coder}-{lut}"
        mm = export_c(encode_mbit(net, coder=coder, n_streams=2, raw_fallback=False), d, lut=lut).memory_map
        sz = object_sizes(d)
        n_arrays = 5
        # model.o holds exactly the const data (Berkeley `size` counts .rodata as text)
        model_bytes = sz["model"]["text"] + sz["model"]["data"]
        assert mm["flash"]["data_total"] <= model_bytes <= mm["flash"]["data_total"] + 32 * n_arrays
        assert sz["model"]["bss"] == 0
        # static buffers: all in mb_runtime.o; +8 for 64-bit pointers in the decoder state
        assert mm["ram"]["total"] <= sz["mb_runtime"]["bss"] <= mm["ram"]["total"] + 8 + 32 * len(mm["ram"]["buffers"])
        assert sz["mb_runtime"]["data"] == 0 and sz["main"]["data"] == 0
        assert sz["main"]["bss"] >= mm["ram"]["app_io"]["image"] + mm["ram"]["app_io"]["logits"]
        # code: the estimate is an upper bound on this host
        assert sz["mb_runtime"]["text"] <= mm["flash"]["code_estimate_parts"]["runtime"]
        assert sz["main"]["text"] <= mm["flash"]["code_estimate_parts"]["main"]


@pytest.mark.cc
@needs_cc
def test_main_reads_files_and_rejects_partial_images(net, tmp_path):
    export_c(encode_mbit(net, coder="tans", raw_fallback=False), tmp_path)
    exe = compile_c(tmp_path)
    x = _images(5)
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    from_file = subprocess.run([str(exe), str(tmp_path / "x.raw")], capture_output=True, check=True).stdout
    from_stdin = subprocess.run([str(exe), "-"], input=x.tobytes(), capture_output=True, check=True).stdout
    assert from_file == from_stdin and len(from_file.splitlines()) == 5
    r = subprocess.run([str(exe)], input=x.tobytes() + b"\0" * 7, capture_output=True)
    assert r.returncode == 1 and b"trailing partial image" in r.stderr
    assert subprocess.run([str(exe), str(tmp_path / "nope.raw")], capture_output=True).returncode == 1


@pytest.mark.cc
@needs_cc
def test_corrupted_stream_is_reported(net, tmp_path):
    data = encode_mbit(net, coder="tans", n_streams=2, raw_fallback=False)
    export_c(data, tmp_path)
    m = plan_model(data)
    bad = dataclasses.replace(m, layers=(dataclasses.replace(m.layers[0], stream_bits=m.layers[0].stream_bits + 1),)
                              + m.layers[1:])
    (tmp_path / "model.c").write_text(render_model_c(bad, layout(bad)))
    r = subprocess.run([str(compile_c(tmp_path))], input=_images(1).tobytes(), capture_output=True)
    assert r.returncode == 3 and b"corrupted" in r.stderr


@pytest.mark.cc
@needs_cc
def test_bundled_model_on_cifar10(tmp_path):
    path = bundled_classifier_path()
    if path is None:
        pytest.skip("no bundled nqe-1mbit.mbit yet")
    from megabit.data import load_cifar10
    from megabit.fmt.mbit import mbit_to_integer

    root = Path("/work/shared/data/cifar10-jpeg-q75")
    x = load_cifar10(root, "test", limit=200).x.numpy() if root.exists() else _images(50)
    net = mbit_to_integer(read_mbit(path))
    mm = _check_exact(net, path.read_bytes(), tmp_path, x)
    assert mm["budget"]["coded_weight_bits"] <= 1 << 20


def test_params_are_int16_only_when_every_value_fits():
    from megabit.export.c.memory import Layout

    assert Layout("ram", params=[-(1 << 15), (1 << 15) - 1]).param_bytes == 2
    assert Layout("ram", params=[1 << 15]).param_bytes == 4 and Layout("ram", params=[-(1 << 15) - 1]).param_bytes == 4
    assert Layout("ram").param_bytes == 2


@pytest.mark.cc
@needs_cc
def test_c_int32_params_are_bit_exact(net, tmp_path, monkeypatch):
    """A model whose params need int32 (forced here) compiles to int32 mb_params and the same logits."""
    from megabit.export.c.memory import Layout

    monkeypatch.setattr(Layout, "param_bytes", property(lambda self: 4))
    mm = _check_exact(net, encode_mbit(net, coder="tans", raw_fallback=False), tmp_path / "c", _images(50))
    assert "typedef int32_t mb_param_t;" in (tmp_path / "c" / "model.h").read_text()
    n = sum(L.cout for L in plan_model(encode_mbit(net, coder="tans", raw_fallback=False)).layers)
    assert mm["flash"]["data"]["params"] == 4 * n


# --- the patch encoder --------------------------------------------------------------------------
def _patches_of_demo_image(n: int) -> np.ndarray:
    from PIL import Image

    from megabit.codec.demo import DEMO_IMAGE
    from megabit.models.patch_codec import patchify

    img = np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))
    p = patchify(torch.from_numpy(img.copy()).permute(2, 0, 1)[None]).numpy()
    return np.ascontiguousarray(p[np.random.default_rng(0).permutation(len(p))[:n]])


def test_patch_encoder_plan_and_refusals(tmp_path):
    from megabit.export.c.plan import KIND_CODE
    from megabit.export.integer import IntegerPatchEncoder

    from ..conftest import make_bsn_patch_codec

    data = encode_mbit(IntegerPatchEncoder.from_model(make_bsn_patch_codec(1)), coder="tans", raw_fallback=False)
    m = plan_model(data)
    assert m.is_encoder and m.layers[-1].kind == KIND_CODE and m.code_bits == 64 and m.num_classes == 0
    with pytest.raises(ValueError, match="32x32 patches"):
        export_c(data, tmp_path / "x", image_size=(64, 64))
    assert not (tmp_path / "x").exists()


@pytest.mark.cc
@needs_cc
@pytest.mark.parametrize("coder, lut", [("tans", "flash"), ("raw", "ram"), ("tans", "ram")])
def test_c_patch_encoder_bits_are_exact(tmp_path, coder, lut):
    from megabit.export.c import run_c_codes
    from megabit.export.integer import IntegerPatchEncoder

    from ..conftest import make_bsn_patch_codec

    ie = IntegerPatchEncoder.from_model(make_bsn_patch_codec(2))
    x = np.concatenate([_images(30), _patches_of_demo_image(30)])
    res = export_c(encode_mbit(ie, coder=coder, n_streams=4 if lut == "ram" else 1, raw_fallback=False), tmp_path, lut=lut)
    got = run_c_codes(compile_c(tmp_path), x)
    np.testing.assert_array_equal(got, ie(torch.from_numpy(x)).reshape(len(x), -1).numpy())
    assert res.memory_map["kind"] == "patch-encoder" and res.memory_map["ram"]["app_io"]["code_bits"] == 64


@pytest.mark.cc
@needs_cc
def test_bundled_patch_encoder_on_kodak_patches(tmp_path):
    from megabit.codec.registry import DEFAULT_MODEL, asset_path
    from megabit.export.c import run_c_codes

    if not asset_path(DEFAULT_MODEL).is_file():
        pytest.skip("no bundled codec")
    from megabit.codec.api import load_codec

    codec = load_codec(DEFAULT_MODEL)
    x = _patches_of_demo_image(200)
    res = export_c(DEFAULT_MODEL, tmp_path)  # a bundled name: its patch encoder, tANS-packed
    got = run_c_codes(compile_c(tmp_path), x)
    # the C bits are the codec's own bits (PyTorch fake-quant path); lower rates are prefixes
    from megabit.models.patch_codec import unpatchify

    for i in range(0, len(x), 50):
        img = unpatchify(torch.from_numpy(x[i : i + 50]).float(), 1, 1, 50)
        ref = codec.model.compress(img, max(codec.model.cfg.rates)).numpy()
        np.testing.assert_array_equal(got[i : i + 50], ref)
    assert res.memory_map["budget"]["flash_data_fits"]


@pytest.mark.cc
@needs_cc
def test_patch_encoder_sanitizers_run_clean(tmp_path):
    from megabit.export.c import run_c_codes
    from megabit.export.integer import IntegerPatchEncoder

    from ..conftest import make_bsn_patch_codec

    ie = IntegerPatchEncoder.from_model(make_bsn_patch_codec(4))
    flags = _sanitizer_flags_or_skip(tmp_path)
    export_c(encode_mbit(ie, coder="tans", n_streams=2, raw_fallback=False), tmp_path)
    x = _images(10)
    got = run_c_codes(compile_c(tmp_path, flags), x)
    np.testing.assert_array_equal(got, ie(torch.from_numpy(x)).reshape(len(x), -1).numpy())


@pytest.mark.cc
@needs_cc
@pytest.mark.parametrize("bsn", [dict(bsn_granularity="channel", bsn_mantissa_bits=1),
                                 dict(bsn_granularity="layer", bsn_mantissa_bits=2),
                                 dict(bsn_granularity="channel", bsn_mantissa_bits=0)], ids=["channel-m1", "layer-m2", "channel-m0"])
def test_c_per_channel_bsn_is_bit_exact(tmp_path, bsn):
    """[I] per-channel BSN / BSN mantissa: the runtime's per-channel params give the integer path's logits."""
    net = IntegerNQE.from_model(make_bsn_model(seed=3, fit=True, **bsn))
    mm = _check_exact(net, encode_mbit(net, coder="tans", raw_fallback=False), tmp_path / "c", _images(200))
    plan = plan_model(encode_mbit(net, coder="tans", raw_fallback=False))
    assert all(L.rshift == -128 for L in plan.layers if L.kind == 1)
    n_channels = sum(L.cout for L in plan.layers if L.kind == 1)
    n_bias = sum(L.cout for L in plan.layers if L.kind != 1)
    # o_c, then M_c << 8 | (rshift_c + 128): two words per channel, plus the head's biases; int16 words
    # here (every value fits), which the compiled run above read correctly
    assert mm["flash"]["data"]["params"] == 2 * (2 * n_channels + n_bias)
