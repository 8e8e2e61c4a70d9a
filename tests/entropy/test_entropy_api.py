import doctest
import os
import subprocess
import sys

import numpy as np
import pytest

import megabit.entropy as E
from megabit.entropy import _common, decode_array, encode_array, entropy_bits, freqs_from_bytes, freqs_to_bytes, rans, tans


@pytest.mark.parametrize("module", ["megabit.entropy", "megabit.entropy.freq", "megabit.entropy.tans", "megabit.entropy.rans"])
def test_doctests(module):
    import importlib

    m = importlib.import_module(module)
    res = doctest.testmod(m, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0
    assert res.failed == 0


def test_docs_example():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "entropy.md"
    if not doc.exists():
        pytest.skip("docs/entropy.md not present")
    res = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


@pytest.mark.parametrize("coder", ["tans", "rans"])
@pytest.mark.parametrize("k", [1, 4, 8, 32])
def test_encode_array_roundtrip(coder, k):
    rng = np.random.default_rng(k)
    w = np.clip(np.round(rng.normal(0, 1.2, (64, 3, 3, 3))), -3, 3).astype(np.int8) + 3
    payload, freqs = encode_array(w, coder=coder, n_streams=k)
    assert int(freqs.sum()) == 2 ** E.DEFAULT_TABLE_LOG[coder]
    y = decode_array(payload, freqs)
    assert np.array_equal(y, w.reshape(-1))
    assert np.array_equal(decode_array(payload, freqs, w.size, coder=coder, n_streams=k), w.reshape(-1))
    table = freqs_to_bytes(freqs)
    assert np.array_equal(freqs_from_bytes(table)[0], freqs)
    assert 8 * len(payload) <= 1.01 * entropy_bits(np.bincount(w.reshape(-1))) + 8 * (20 + 4 * k) + 12 * k


def test_encode_array_edge_cases():
    p, f = encode_array(np.array([], dtype=np.int64))
    assert decode_array(p, f).size == 0
    p, f = encode_array(np.full(100, 7), coder="rans", table_log=8)
    assert decode_array(p, f).tolist() == [7] * 100
    with pytest.raises(ValueError, match="non-negative"):
        encode_array(np.array([-1, 0]))
    with pytest.raises(ValueError, match="coder"):
        encode_array(np.array([1]), coder="huffman")
    with pytest.raises(ValueError, match="magic"):
        decode_array(b"xxxx" + bytes(30), f)
    with pytest.raises(ValueError):
        decode_array(p, f, coder="tans")


@pytest.mark.parametrize("coder", [tans, rans])
@pytest.mark.parametrize("k", [1, 4, 8, 32])
@pytest.mark.parametrize("table_log", [6, 9, 12])
def test_long_sequences_reference_equals_numba(coder, k, table_log):
    rng = np.random.default_rng(table_log * 100 + k)
    n_alpha = [1, 3, 7, 16][k % 4]
    p = np.exp(-0.8 * np.arange(n_alpha))
    x = rng.choice(n_alpha, size=5000, p=p / p.sum()).astype(np.uint8)
    f = E.quantize_frequencies(np.bincount(x, minlength=n_alpha), table_log)
    a = coder.encode(x, f, table_log, k, backend="python")
    assert a == coder.encode(x, f, table_log, k, backend="numba")
    assert np.array_equal(coder.decode(a, f, table_log, x.size, k, backend="python"), x)
    assert np.array_equal(coder.decode(a, f, table_log, x.size, k, backend="numba"), x)


def test_backend_resolution():
    assert _common.resolve_backend("python") == "python"
    assert _common.resolve_backend(None) in ("numba", "python")
    with pytest.raises(ValueError):
        _common.resolve_backend("gpu")


def test_python_fallback_without_numba():
    code = (
        "import numpy as np\n"
        "from megabit.entropy import encode_array, decode_array, _common\n"
        "assert not _common.HAVE_NUMBA\n"
        "x = np.arange(100) % 5\n"
        "for c in ('tans', 'rans'):\n"
        "    p, f = encode_array(x, coder=c, n_streams=4)\n"
        "    assert (decode_array(p, f) == x).all()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, MEGABIT_NO_NUMBA="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout
