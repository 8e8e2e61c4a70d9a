"""Integer-only patch encoder: the same bits as the fake-quantized PyTorch codec, and its .mbit file."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from megabit.export.integer import IntegerPatchEncoder
from megabit.fmt.mbit import MbitError, encode_mbit, inspect_mbit, mbit_to_integer, mbit_to_model, read_mbit

from ..conftest import make_bsn_patch_codec


@pytest.fixture(scope="module")
def codec():
    return make_bsn_patch_codec(seed=3)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), gh=st.integers(1, 3), gw=st.integers(1, 3), rate=st.sampled_from([32, 64]))
def test_integer_bits_equal_fake_quant_bits(codec, seed, gh, gw, rate):
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (1, 3, 32 * gh, 32 * gw), dtype=np.uint8))
    ie = IntegerPatchEncoder.from_model(codec)
    np.testing.assert_array_equal(ie.compress(x, rate).numpy(), codec.compress(x.float(), rate).numpy())


def test_integer_encoder_refuses_bn_mode_and_bad_input(codec):
    from megabit.models.patch_codec import PatchCodec, PatchCodecConfig

    with pytest.raises(ValueError, match="BSN"):
        IntegerPatchEncoder.from_model(PatchCodec(PatchCodecConfig.tiny()))
    ie = IntegerPatchEncoder.from_model(codec)
    with pytest.raises(ValueError, match="uint8"):
        ie(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="32, 32"):
        ie(torch.zeros(1, 3, 16, 32, dtype=torch.uint8))


@settings(max_examples=10, deadline=None)
@given(coder=st.sampled_from(["raw", "tans", "rans"]), streams=st.sampled_from([1, 4]))
def test_patch_encoder_mbit_roundtrip(codec, coder, streams):
    ie = IntegerPatchEncoder.from_model(codec)
    data = encode_mbit(ie, coder=coder, n_streams=streams, raw_fallback=False)
    f = read_mbit(data)
    assert f.kind == "patch-encoder" and f.codec_config == codec.cfg
    back = mbit_to_integer(f)
    for a, b in zip(ie.layers + [ie.code], back.layers + [back.code]):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        assert (a.shift, a.groups, a.pool, a.levels) == (b.shift, b.groups, b.pool, b.levels)
    ins = inspect_mbit(f)
    assert ins["total_bits"] == 8 * len(data) and ins["layers"][-1]["name"] == "code"
    with pytest.raises(MbitError, match="not a classifier"):
        mbit_to_model(f)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_corrupted_patch_encoder_file_is_a_clear_error(codec, data):
    blob = bytearray(encode_mbit(IntegerPatchEncoder.from_model(codec), coder="tans", raw_fallback=False))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(MbitError):
        mbit_to_integer(read_mbit(bytes(blob)))
