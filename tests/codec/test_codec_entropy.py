import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from megabit.codec.entropy_model import _contexts, decode_bits, encode_bits, ideal_bits


@settings(max_examples=40, deadline=None)
@given(gh=st.integers(1, 6), gw=st.integers(1, 6), r=st.sampled_from([8, 32, 64]), p=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**31))
def test_roundtrip(gh, gw, r, p, seed):
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, (64, 6)).astype(np.float32)  # includes near-0/1 probabilities
    bits = (rng.random((gh * gw, r)) < p).astype(np.uint8)
    blob = encode_bits(bits, gh, gw, probs)
    assert np.array_equal(decode_bits(blob, gh, gw, r, probs), bits)


def test_contexts_checkerboard():
    bits = np.ones((9, 2), np.uint8)
    ctx = _contexts(bits, 3, 3)
    assert ctx[0].tolist() == [0, 0] and ctx[1].tolist() == [5, 5]  # A patch; B patch whose A neighbours are all 1


def test_skewed_bits_compress():
    rng = np.random.default_rng(0)
    probs = np.full((64, 6), 0.1, np.float32)
    bits = (rng.random((100, 64)) < 0.1).astype(np.uint8)
    blob = encode_bits(bits, 10, 10, probs)
    assert 8 * len(blob) < 0.6 * bits.size
    assert abs(8 * len(blob) - ideal_bits(bits, 10, 10, probs)) < 0.02 * bits.size + 600
