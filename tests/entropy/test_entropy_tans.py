import numpy as np
import pytest
from entropy_strategies import coding_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megabit.entropy import build_tables, entropy_bits, quantize_frequencies, tans

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=120, **SETTINGS)
@given(case=coding_cases())
def test_roundtrip_numba(case):
    x, freqs, tl, k = case
    payload = tans.encode(x, freqs, tl, n_streams=k, backend="numba")
    y = tans.decode(payload, freqs, tl, x.size, n_streams=k, backend="numba")
    assert y.dtype == np.uint8
    assert np.array_equal(x, y)


@settings(max_examples=40, **SETTINGS)
@given(case=coding_cases(max_len=2000))
def test_reference_equals_numba(case):
    x, freqs, tl, k = case
    a = tans.encode(x, freqs, tl, n_streams=k, backend="python")
    b = tans.encode(x, freqs, tl, n_streams=k, backend="numba")
    assert a == b
    ya = tans.decode(a, freqs, tl, x.size, n_streams=k, backend="python")
    yb = tans.decode(a, freqs, tl, x.size, n_streams=k, backend="numba")
    assert np.array_equal(ya, x) and np.array_equal(yb, x)


@pytest.mark.parametrize("table_log", [5, 6, 9, 12, 15])
def test_tables_invariants(table_log):
    rng = np.random.default_rng(table_log)
    counts = rng.integers(0, 1000, 20)
    counts[3] = 0
    counts[7] = 1
    f = quantize_frequencies(counts, table_log)
    t = build_tables(f, table_log)
    L = 1 << table_log
    assert t.L == L and t.lut_bytes == 4 * L
    assert np.array_equal(np.bincount(t.spread, minlength=f.size), f)
    assert np.array_equal(t.dec_symbol, t.spread)
    assert t.dec_symbol.dtype == np.uint8 and t.dec_nb_bits.dtype == np.uint8
    assert t.dec_new_state_base.dtype == np.uint16 and t.dec_lut.dtype == np.uint32
    base = t.dec_new_state_base.astype(np.int64)
    nb = t.dec_nb_bits.astype(np.int64)
    assert np.all(nb <= table_log)
    assert np.all(base + (1 << nb) <= L)
    assert np.array_equal(
        t.dec_lut, t.dec_symbol | (t.dec_nb_bits.astype(np.uint32) << 8) | (t.dec_new_state_base.astype(np.uint32) << 16)
    )
    # the packed LUT is byte-identical to struct {u8 sym; u8 nb; u16 base;}[L]
    rec = np.zeros(L, dtype=[("sym", "u1"), ("nb", "u1"), ("base", "<u2")])
    rec["sym"], rec["nb"], rec["base"] = t.dec_symbol, t.dec_nb_bits, t.dec_new_state_base
    assert rec.tobytes() == t.dec_lut.astype("<u4").tobytes()
    # every decoder state range of a symbol covers [0, L) exactly once per symbol
    for s in np.flatnonzero(f):
        us = np.flatnonzero(t.spread == s)
        covered = np.concatenate([np.arange(base[u], base[u] + (1 << nb[u])) for u in us])
        assert np.array_equal(np.sort(covered), np.arange(L))
    # encoder table is the inverse of the decoder: state_table entries are L + positions
    assert np.array_equal(np.sort(t.enc_state_table.astype(np.int64)), np.arange(L, 2 * L))
    with pytest.raises(ValueError):
        t.dec_lut[0] = 1  # read-only (tables are cached and shared)


def test_single_symbol_alphabet_costs_no_bits():
    x = np.zeros(1000, dtype=np.uint8)
    f = quantize_frequencies([5], 8)
    p = tans.encode(x, f, 8, n_streams=4)
    assert len(p) == 20 + 2 * 4
    assert np.array_equal(tans.decode(p, f, 8, 1000, 4), x)


def test_size_close_to_entropy():
    rng = np.random.default_rng(0)
    probs = np.array([0.05, 0.2, 0.5, 0.2, 0.05])
    x = rng.choice(5, size=100_000, p=probs).astype(np.uint8)
    c = np.bincount(x)
    H = entropy_bits(c)
    for tl in (10, 12):
        f = quantize_frequencies(c, tl)
        for k in (1, 8, 32):
            p = tans.encode(x, f, tl, n_streams=k)
            header = 20 + 2 * k
            assert 8 * len(p) <= 1.01 * H + 8 * header, (tl, k)
            assert 8 * len(p) <= 1.002 * H + 8 * header + tl * k, (tl, k)


def test_input_validation():
    f = quantize_frequencies([3, 1, 0], 6)
    with pytest.raises(ValueError, match="frequency 0"):
        tans.encode(np.array([0, 2]), f, 6)
    with pytest.raises(ValueError, match="lie in"):
        tans.encode(np.array([0, 3]), f, 6)
    with pytest.raises(ValueError):
        tans.encode(np.array([0, -1]), f, 6)
    with pytest.raises(ValueError, match="table_log"):
        tans.encode(np.array([0, 1]), f, 7)
    with pytest.raises(ValueError):
        tans.encode(np.array([0.5]), f, 6)
    with pytest.raises(ValueError, match="n_streams"):
        tans.encode(np.array([0]), f, 6, n_streams=0)
    with pytest.raises(ValueError, match="table_log"):
        tans.encode(np.array([0]), quantize_frequencies([1, 1], 4), 4)
    with pytest.raises(ValueError, match="backend"):
        tans.encode(np.array([0]), f, 6, backend="cuda")
    x = np.array([0, 1, 0, 0, 1], dtype=np.uint8)
    p = tans.encode(x, f, 6, n_streams=2)
    with pytest.raises(ValueError, match="n_symbols"):
        tans.decode(p, f, 6, 4, n_streams=2)
    with pytest.raises(ValueError, match="n_streams"):
        tans.decode(p, f, 6, 5, n_streams=3)
    with pytest.raises(ValueError, match="magic"):
        tans.decode(b"rANS" + p[4:], f, 6, 5, n_streams=2)
    assert np.array_equal(tans.decode(p, f, None, None, None), x)  # all taken from the header
    # 2-D input is flattened
    assert np.array_equal(tans.decode(tans.encode(x.reshape(1, 5), f, 6), f, 6, 5), x)


def _corruptions(payload: bytes, data):
    kind = data.draw(st.sampled_from(["truncate", "flip", "byte", "extend"]))
    b = bytearray(payload)
    if kind == "truncate":
        return bytes(b[: data.draw(st.integers(0, len(b) - 1))])
    if kind == "extend":
        return bytes(b) + bytes(data.draw(st.binary(min_size=1, max_size=4)))
    i = data.draw(st.integers(0, len(b) - 1))
    if kind == "flip":
        b[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        b[i] = (b[i] + data.draw(st.integers(1, 255))) & 255
    return bytes(b)


@settings(max_examples=150, **SETTINGS)
@given(case=coding_cases(max_len=600), data=st.data())
def test_corrupted_payload_raises(case, data):
    x, freqs, tl, k = case
    payload = tans.encode(x, freqs, tl, n_streams=k)
    bad = _corruptions(payload, data)
    backend = data.draw(st.sampled_from(["numba", "python"]))
    with pytest.raises(ValueError):
        tans.decode(bad, freqs, tl, x.size, n_streams=k, backend=backend)


@settings(max_examples=150, **SETTINGS)
@given(case=coding_cases(max_len=600), data=st.data())
def test_corruption_without_crc_never_crashes(case, data):
    """With the CRC disabled the decoder must still only return or raise ValueError."""
    x, freqs, tl, k = case
    payload = bytearray(tans.encode(x, freqs, tl, n_streams=k))
    n_edits = data.draw(st.integers(1, 4))
    for _ in range(n_edits):
        if len(payload) > 20:
            i = data.draw(st.integers(20, len(payload) - 1))
            payload[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        payload = payload[: data.draw(st.integers(0, len(payload)))]
    results = []
    for backend in ("numba", "python"):
        try:
            y = tans.decode(bytes(payload), freqs, tl, x.size, n_streams=k, backend=backend, check_crc=False)
            assert y.shape == (x.size,)
            results.append(y.tobytes())
        except ValueError:
            results.append("ValueError")
    assert results[0] == results[1]  # both backends agree even on garbage


@settings(max_examples=100, **SETTINGS)
@given(blob=st.binary(max_size=80), tl=st.integers(6, 12))
def test_random_bytes_raise(blob, tl):
    f = quantize_frequencies([5, 3, 1], tl)
    for check_crc in (True, False):
        try:
            tans.decode(blob, f, tl, None, None, check_crc=check_crc)
        except ValueError:
            pass
