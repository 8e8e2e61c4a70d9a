import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megabit.entropy import (
    cdf_from_freqs,
    cross_entropy_bits,
    entropy_bits,
    freqs_from_bytes,
    freqs_to_bytes,
    quantize_frequencies,
)

counts_st = st.lists(st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 10**6)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(counts=counts_st, precision=st.integers(1, 16))
def test_quantize_guarantees(counts, precision):
    c = np.array(counts, dtype=np.int64)
    nnz = int((c > 0).sum())
    if nnz == 0 or nnz > 2**precision:
        with pytest.raises(ValueError):
            quantize_frequencies(c, precision)
        return
    f = quantize_frequencies(c, precision)
    assert f.dtype == np.uint32
    assert int(f.sum()) == 2**precision
    assert np.all(f[c > 0] >= 1)  # minimum-probability guarantee
    assert np.all(f[c == 0] == 0)
    assert np.array_equal(f, quantize_frequencies(c.copy(), precision))  # deterministic
    # never worse than the plain largest-remainder table (when that one is valid)
    lr = np.floor(c * 2**precision / c.sum()).astype(np.int64)
    if lr.sum() == 2**precision and np.all(lr[c > 0] >= 1):
        assert cross_entropy_bits(c, f) <= cross_entropy_bits(c, lr) + 1e-6


def _brute_force_best(c, M):
    best = math.inf
    nz = [i for i, v in enumerate(c) if v > 0]
    for comp in itertools.product(range(1, M + 1), repeat=len(nz)):
        if sum(comp) != M:
            continue
        f = np.zeros(len(c), dtype=np.int64)
        f[nz] = comp
        best = min(best, cross_entropy_bits(c, f))
    return best


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=4), precision=st.integers(2, 4))
def test_quantize_is_optimal_small(counts, precision):
    c = np.array(counts)
    M = 2**precision
    if not 0 < (c > 0).sum() <= M:
        return
    f = quantize_frequencies(c, precision)
    assert cross_entropy_bits(c, f) <= _brute_force_best(c, M) + 1e-9


def test_quantize_errors_and_examples():
    with pytest.raises(ValueError, match="all counts are zero"):
        quantize_frequencies([0, 0, 0], 8)
    with pytest.raises(ValueError, match="increase precision_bits"):
        quantize_frequencies(np.ones(300), 8)
    with pytest.raises(ValueError):
        quantize_frequencies([1, -1], 8)
    with pytest.raises(ValueError):
        quantize_frequencies([[1, 2]], 8)
    with pytest.raises(ValueError):
        quantize_frequencies([1, 2], 0)
    assert quantize_frequencies([0, 7, 0], 6).tolist() == [0, 64, 0]
    # a very rare symbol still gets one slot
    f = quantize_frequencies([10**9, 1], 6)
    assert f.tolist() == [63, 1]
    assert quantize_frequencies(np.ones(256, dtype=np.int64), 8).tolist() == [1] * 256


def test_entropy_and_cdf():
    assert entropy_bits([5, 5]) == pytest.approx(10.0)
    assert entropy_bits([7]) == 0.0
    assert entropy_bits([0, 0]) == 0.0
    assert cross_entropy_bits([1, 1], [2, 2]) == pytest.approx(2.0)
    assert cross_entropy_bits([1, 1], [4, 0]) == math.inf
    c = np.array([50, 30, 15, 5])
    assert cross_entropy_bits(c, quantize_frequencies(c, 12)) >= entropy_bits(c) - 1e-9
    assert cdf_from_freqs([3, 0, 5]).tolist() == [0, 3, 3, 8]


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 1000), min_size=1, max_size=300), precision=st.integers(9, 16))
def test_freqs_serialization_roundtrip(counts, precision):
    c = np.array(counts)
    if c.sum() == 0:
        return
    f = quantize_frequencies(c, precision)
    b = freqs_to_bytes(f, precision)
    g, end = freqs_from_bytes(b + b"tail")
    assert end == len(b)
    assert np.array_equal(f, g)
    for cut in range(len(b)):
        try:
            freqs_from_bytes(b[:cut])
        except ValueError:
            pass
