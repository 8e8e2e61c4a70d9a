import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megabit.entropy import decode_with_cdfs, encode_with_cdfs, quantize_frequencies

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def random_cdf_tables(rng, n_cdfs, max_alpha=20, precision=16):
    lengths = rng.integers(2, max_alpha + 2, n_cdfs)  # alphabet (incl. escape) + 1
    tab = np.zeros((n_cdfs, int(lengths.max())), dtype=np.int32)
    for j, ln in enumerate(lengths):
        f = quantize_frequencies(rng.integers(1, 1000, ln - 1) ** 2, precision)
        tab[j, :ln] = np.concatenate([[0], np.cumsum(f)])
    offsets = rng.integers(-20, 5, n_cdfs).astype(np.int32)
    return tab, lengths.astype(np.int32), offsets


@st.composite
def cdf_cases(draw, max_len=3000):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_cdfs = draw(st.integers(1, 6))
    tab, lengths, offsets = random_cdf_tables(rng, n_cdfs)
    n = draw(st.integers(0, max_len))
    idx = rng.integers(0, n_cdfs, n)
    scale = draw(st.sampled_from([0.5, 3.0, 30.0]))
    vals = offsets[idx] + np.round(rng.laplace(lengths[idx] / 2, scale, n)).astype(np.int64)
    if n and draw(st.booleans()):  # extreme values through the bypass path
        k = rng.integers(0, n, max(1, n // 50))
        vals[k] = rng.integers(-(2**31), 2**31 - 1, k.size)
        vals[k[:1]] = draw(st.sampled_from([-(2**31), 2**31 - 1]))
    vals = np.clip(vals, -(2**31), 2**31 - 1).astype(np.int32)
    return vals, idx, tab, lengths, offsets


@settings(max_examples=80, **SETTINGS)
@given(case=cdf_cases())
def test_cdf_roundtrip_and_reference(case):
    vals, idx, tab, lengths, offsets = case
    a = encode_with_cdfs(vals, idx, tab, lengths, offsets, backend="numba")
    assert np.array_equal(decode_with_cdfs(a, idx, tab, lengths, offsets, backend="numba"), vals)
    if vals.size <= 1500:
        b = encode_with_cdfs(vals, idx, tab, lengths, offsets, backend="python")
        assert a == b
        assert np.array_equal(decode_with_cdfs(a, idx, tab, lengths, offsets, backend="python"), vals)


def test_cdf_list_input_and_size():
    # ragged python lists like CompressAI's _quantized_cdf.tolist()
    cdfs = [[0, 40000, 60000, 65535, 65536], [0, 1, 65536]]
    lengths = [5, 3]
    offsets = [-1, 0]
    rng = np.random.default_rng(0)
    idx = np.zeros(20000, dtype=np.int64)
    vals = rng.choice([-1, 0, 1], size=idx.size, p=[40000 / 65535, 20000 / 65535, 5535 / 65535]).astype(np.int32)
    p = encode_with_cdfs(vals, idx, cdfs, lengths, offsets)
    assert np.array_equal(decode_with_cdfs(p, idx, cdfs, lengths, offsets), vals)
    ideal = -np.log2(np.array([40000, 20000, 5535]) / 65536)[vals + 1].sum()
    assert 8 * len(p) <= ideal * 1.001 + 8 * (20 + 8 + 4)
    # cdf 1 has a single real symbol (value 0) + escape
    vals2 = np.array([0, 0, 5, -3, 0], dtype=np.int32)
    idx2 = np.ones(5, dtype=np.int64)
    p2 = encode_with_cdfs(vals2, idx2, cdfs, lengths, offsets)
    assert decode_with_cdfs(p2, idx2, cdfs, lengths, offsets).tolist() == vals2.tolist()


def test_cdf_validation():
    cdfs = np.array([[0, 30000, 65536]])
    with pytest.raises(ValueError, match="end at"):
        encode_with_cdfs([0], [0], np.array([[0, 30000, 65535]]), [3], [0])
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_with_cdfs([0], [0], np.array([[0, 0, 65536]]), [3], [0])
    with pytest.raises(ValueError, match="cdf_indices"):
        encode_with_cdfs([0], [1], cdfs, [3], [0])
    with pytest.raises(ValueError, match="int32"):
        encode_with_cdfs([2**31], [0], cdfs, [3], [0])
    with pytest.raises(ValueError):
        encode_with_cdfs([0, 1], [0], cdfs, [3], [0])
    p = encode_with_cdfs([0, 1, 2], [0, 0, 0], cdfs, [3], [0])
    with pytest.raises(ValueError, match="n_symbols"):
        decode_with_cdfs(p, [0, 0], cdfs, [3], [0])


@settings(max_examples=100, **SETTINGS)
@given(case=cdf_cases(max_len=400), data=st.data())
def test_cdf_corruption(case, data):
    vals, idx, tab, lengths, offsets = case
    b = bytearray(encode_with_cdfs(vals, idx, tab, lengths, offsets))
    i = data.draw(st.integers(0, len(b) - 1))
    b[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ValueError):
        decode_with_cdfs(bytes(b), idx, tab, lengths, offsets)
    # without the CRC: only ValueError or a result, identical for both backends
    for _ in range(data.draw(st.integers(0, 3))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        b = b[: data.draw(st.integers(0, len(b)))]
    results = []
    for backend in ("numba", "python"):
        try:
            y = decode_with_cdfs(bytes(b), idx, tab, lengths, offsets, backend=backend, check_crc=False)
            results.append(y.tobytes())
        except ValueError:
            results.append("ValueError")
    assert results[0] == results[1]
