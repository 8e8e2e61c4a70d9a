import numpy as np
import pytest
from entropy_strategies import coding_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megabit.entropy import entropy_bits, quantize_frequencies, rans

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=120, **SETTINGS)
@given(case=coding_cases(table_logs=(6, 16)))
def test_roundtrip_numba(case):
    x, freqs, prec, k = case
    payload = rans.encode(x, freqs, prec, n_streams=k, backend="numba")
    y = rans.decode(payload, freqs, prec, x.size, n_streams=k, backend="numba")
    assert np.array_equal(x, y)


@settings(max_examples=40, **SETTINGS)
@given(case=coding_cases(max_len=2000, table_logs=(1, 16)))
def test_reference_equals_numba(case):
    x, freqs, prec, k = case
    a = rans.encode(x, freqs, prec, n_streams=k, backend="python")
    b = rans.encode(x, freqs, prec, n_streams=k, backend="numba")
    assert a == b
    assert np.array_equal(rans.decode(a, freqs, prec, x.size, n_streams=k, backend="python"), x)
    assert np.array_equal(rans.decode(a, freqs, prec, x.size, n_streams=k, backend="numba"), x)


def test_size_close_to_entropy():
    rng = np.random.default_rng(0)
    x = rng.choice(5, size=100_000, p=[0.05, 0.2, 0.5, 0.2, 0.05]).astype(np.uint8)
    c = np.bincount(x)
    H = entropy_bits(c)
    for prec in (12, 14):
        f = quantize_frequencies(c, prec)
        for k in (1, 8, 32):
            p = rans.encode(x, f, prec, n_streams=k)
            assert 8 * len(p) <= 1.01 * H + 8 * (20 + 4 * k)
            assert 8 * len(p) <= 1.001 * H + 8 * (20 + 4 * k)


def test_large_alphabet_uint16():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1000, 5000)
    f = quantize_frequencies(np.bincount(x, minlength=1000), 14)
    p = rans.encode(x, f, 14, n_streams=4)
    y = rans.decode(p, f, 14, x.size, n_streams=4)
    assert y.dtype == np.uint16 and np.array_equal(x, y)


def test_validation():
    f = quantize_frequencies([3, 1], 8)
    with pytest.raises(ValueError):
        rans.encode([0, 1], f, 17)
    with pytest.raises(ValueError):
        rans.encode([0, 2], f, 8)
    p = rans.encode([0, 1, 1], f, 8, n_streams=2)
    with pytest.raises(ValueError, match="n_streams"):
        rans.decode(p, f, 8, 3, n_streams=1)
    with pytest.raises(ValueError, match="magic"):
        rans.decode(b"tANS" + p[4:], f, 8, 3, n_streams=2)
    assert rans.decode(p, f, 8, 3, n_streams=2).tolist() == [0, 1, 1]


@settings(max_examples=150, **SETTINGS)
@given(case=coding_cases(max_len=600, table_logs=(6, 16)), data=st.data())
def test_corrupted_payload_raises(case, data):
    x, freqs, prec, k = case
    b = bytearray(rans.encode(x, freqs, prec, n_streams=k))
    kind = data.draw(st.sampled_from(["truncate", "flip", "extend"]))
    if kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    elif kind == "extend":
        b += b"\x00\x01"
    else:
        b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ValueError):
        rans.decode(bytes(b), freqs, prec, x.size, n_streams=k, backend=data.draw(st.sampled_from(["numba", "python"])))


@settings(max_examples=150, **SETTINGS)
@given(case=coding_cases(max_len=600, table_logs=(6, 16)), data=st.data())
def test_corruption_without_crc_never_crashes(case, data):
    x, freqs, prec, k = case
    b = bytearray(rans.encode(x, freqs, prec, n_streams=k))
    for _ in range(data.draw(st.integers(1, 4))):
        if len(b) > 20:
            b[data.draw(st.integers(20, len(b) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        b = b[: data.draw(st.integers(0, len(b)))]
    results = []
    for backend in ("numba", "python"):
        try:
            y = rans.decode(bytes(b), freqs, prec, x.size, n_streams=k, backend=backend, check_crc=False)
            assert y.shape == (x.size,)
            results.append(y.tobytes())
        except ValueError:
            results.append("ValueError")
    assert results[0] == results[1]
