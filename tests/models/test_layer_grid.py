"""Per-layer weight grid and BSN offset width (LayerSpec.step_rule / offset_bits): an 8-bit absmax first layer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from megabit.export import IntegerNQE, budget_table, pack_model, unpack_model
from megabit.export.c import compile_c, export_c, find_cc, run_c
from megabit.fmt.mbit import MbitError, encode_mbit, inspect_mbit, mbit_to_integer, mbit_to_model, read_mbit
from megabit.models import NQE, LayerSpec, NQEConfig, get_preset
from megabit.train.classifier import init_for_finetune

from ..conftest import make_bsn_model, tiny_cfg


def w8_cfg(**kw) -> NQEConfig:
    c = tiny_cfg(**kw)
    first = replace(c.layers[0], levels=255, step_rule="absmax", offset_bits=16, shift_bits=5)
    return c.with_(layers=(first,) + c.layers[1:], name="test-tiny-w8")


@pytest.fixture(scope="module")
def w8_model() -> NQE:
    return make_bsn_model(2, cfg=w8_cfg(), fit=True)


def _wide(net: IntegerNQE) -> IntegerNQE:
    """The same network with first-layer offsets at both ends of 16 bits (beyond 12)."""
    L = net.layers[0]
    offs = L.offsets.copy()
    offs[0], offs[-1] = -(1 << 15), (1 << 15) - 1
    return IntegerNQE(net.cfg, [replace(L, offsets=offs)] + list(net.layers[1:]), net.head)


def test_the_layer_overrides_the_config():
    m = NQE(w8_cfg())
    q0, q1 = m.blocks[0].quant, m.blocks[1].quant
    assert (q0.spec.levels, q0.spec.step_rule, q1.spec.step_rule) == (255, "absmax", "heq")
    b = make_bsn_model(2, cfg=w8_cfg())
    assert [blk.norm.offset_bits for blk in b.blocks] == [16, 12, 12]
    # absmax: the largest weight sits on the grid's end, nothing is clipped
    codes = m.blocks[0].weight_codes()
    assert codes.abs().max() == 127 and torch.allclose(codes * q0.step, m.blocks[0].weight, atol=float(q0.step) / 2 + 1e-7)


def test_unset_overrides_are_not_written_and_old_configs_load():
    # a file of a config without overrides is byte for byte what it was before the fields existed
    assert all(set(l) == {"out", "levels", "groups", "kernel", "pool"} for l in tiny_cfg().to_dict()["layers"])
    assert NQEConfig.from_dict(tiny_cfg().to_dict()) == tiny_cfg()
    d = w8_cfg().to_dict()
    assert d["layers"][0]["offset_bits"] == 16 and "offset_bits" not in d["layers"][1]
    assert NQEConfig.from_dict(d) == w8_cfg()


def test_integer_path_is_exact_with_the_wide_first_layer(w8_model):
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    net = IntegerNQE.from_model(w8_model)
    assert np.abs(net.layers[0].codes).max() > 2
    alpha = w8_model.head.log_alpha.exp()
    assert torch.equal(torch.round(w8_model(x) / alpha).long(), net(x))


@pytest.mark.parametrize("scale", [{}, {"bsn_granularity": "channel", "bsn_mantissa_bits": 1}])
def test_budget_counts_each_layers_field_widths(scale):
    a, b = budget_table(tiny_cfg(**scale)), budget_table(w8_cfg(**scale))
    first = tiny_cfg().layers[0]
    n_scales = first.out if scale else 1
    extra_w = 3 * 9 * first.out * (8 - 3)  # 255 levels: 8 bits a weight instead of 3
    assert b["total_bits"] - a["total_bits"] == extra_w + first.out * (16 - 12) + n_scales * (5 - 4)
    w8, base = get_preset("nqe-1mbit-w8"), get_preset("nqe-1mbit")
    L = w8.layers[0]
    assert budget_table(w8)["total_bits"] - budget_table(base)["total_bits"] \
        == 1728 * 5 + 64 * (L.offset_bits - 12) + (L.shift_bits - 4)


def test_a_five_bit_shift_is_stored_and_read(w8_model):
    m = make_bsn_model(2, cfg=w8_cfg(bsn_granularity="channel", bsn_mantissa_bits=1), fit=True)
    net = IntegerNQE.from_model(m)
    L = net.layers[0]
    shift = np.asarray(L.shift).copy()
    shift[0] = 31  # beyond 4 bits
    net = IntegerNQE(net.cfg, [replace(L, shift=shift)] + list(net.layers[1:]), net.head)
    for back in (unpack_model(m.cfg, pack_model(net)[0]), mbit_to_integer(read_mbit(encode_mbit(net)))):
        assert np.array_equal(np.asarray(back.layers[0].shift), shift)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 1000), coder=st.sampled_from(["raw", "tans", "rans"]), streams=st.sampled_from([1, 4]))
def test_packed_and_mbit_roundtrips(seed, coder, streams):
    m = make_bsn_model(seed, cfg=w8_cfg(), fit=True)
    net = _wide(IntegerNQE.from_model(m))
    data, nbits = pack_model(net)
    assert nbits == budget_table(m.cfg)["total_bits"]
    back = unpack_model(m.cfg, data)
    f = read_mbit(encode_mbit(net, coder=coder, n_streams=streams))
    assert inspect_mbit(f)["total_bits"] == 8 * f.size
    for other in (back, mbit_to_integer(f)):
        for a, b in zip(net.layers, other.layers):
            assert np.array_equal(a.codes, b.codes) and np.array_equal(a.offsets, b.offsets) and a.shift == b.shift
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(torch.round(mbit_to_model(f)(x)).long(), net(x))


def test_an_offset_width_that_disagrees_is_refused(w8_model):
    from megabit.fmt.mbit import decode_conv

    net = _wide(IntegerNQE.from_model(w8_model))
    narrow = w8_model.cfg.with_(layers=(replace(w8_model.cfg.layers[0], offset_bits=None),) + w8_model.cfg.layers[1:])
    with pytest.raises(ValueError, match="12-bit signed"):  # 16-bit offsets do not fit a 12-bit field
        encode_mbit(IntegerNQE(narrow, net.layers, net.head))
    f = read_mbit(encode_mbit(net))
    with pytest.raises(MbitError, match="does not match the config"):  # a 16-bit section read under a 12-bit config
        decode_conv(f.sections[1], narrow, 3)


def test_a_float_start_takes_a_new_grid_a_quantized_one_does_not(tmp_path):
    from megabit.train.classifier import save_classifier

    f = NQE(tiny_cfg(quantize=False))
    save_classifier(f, tmp_path / "float.pt")
    calib = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (32,))
    start = init_for_finetune(tmp_path / "float.pt", calib=calib, arch=w8_cfg())
    assert start.blocks[0].quant.spec.levels == 255 and start.blocks[0].quant.spec.step_rule == "absmax"
    q = make_bsn_model(0)
    save_classifier(q, tmp_path / "q.pt")
    with pytest.raises(ValueError, match="do not fit"):
        init_for_finetune(tmp_path / "q.pt", arch=w8_cfg(norm="bsn"))


@pytest.mark.cc
@pytest.mark.skipif(find_cc() is None, reason="no C compiler")
def test_c_export_is_bit_exact(w8_model, tmp_path):
    net = IntegerNQE.from_model(w8_model)
    x = np.random.default_rng(0).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    x[0], x[1] = 0, 255
    export_c(encode_mbit(net, coder="tans"), tmp_path, image_size=(32, 32))
    _, logits = run_c(compile_c(tmp_path), x)
    np.testing.assert_array_equal(logits, net(torch.from_numpy(x)).numpy())


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), streams=st.sampled_from([1, 3]))
def test_a_section_is_never_larger_than_raw(seed, streams):
    from megabit.fmt import spec as S

    net = IntegerNQE.from_model(make_bsn_model(seed, cfg=w8_cfg()))
    on, off = (encode_mbit(net, coder="tans", n_streams=streams, raw_fallback=fb) for fb in (True, False))
    assert len(on) <= len(off)
    f_on, f_off = read_mbit(on), read_mbit(off)
    assert all(s.coder == S.CODERS["tans"] for s in f_off.sections[1:])
    assert f_on.sections[1].coder == S.CODERS["raw"]  # 216 weights on a 255-level grid: the table alone outweighs
    for s_on, s_off in zip(f_on.sections[1:], f_off.sections[1:]):
        # raw exactly where the coded form (table + streams) was larger than the packed weights
        assert (s_on.coder == S.CODERS["raw"]) == (len(s_on.payload) < len(s_off.payload))
    for a, b in zip(mbit_to_integer(f_on).layers, net.layers):
        assert np.array_equal(a.codes, b.codes)
