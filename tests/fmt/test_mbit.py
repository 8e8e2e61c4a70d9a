import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from megabit.export import IntegerNQE
from megabit.fmt.mbit import MbitError, encode_mbit, inspect_mbit, mbit_to_integer, mbit_to_model, read_mbit, write_mbit
from tests.conftest import corrupt_bytes, make_bsn_model

_NET = IntegerNQE.from_model(make_bsn_model(3))
_FILE = encode_mbit(_NET, coder="tans", n_streams=4, raw_fallback=False)


@pytest.mark.parametrize("coder", ["raw", "tans", "rans"])
@pytest.mark.parametrize("streams", [1, 8])
def test_roundtrip_bit_exact(coder, streams, tmp_path):
    p = tmp_path / "m.mbit"
    size = write_mbit(_NET, p, coder=coder, n_streams=streams)
    assert p.stat().st_size == size
    f = read_mbit(p)
    net2 = mbit_to_integer(f)
    for a, b in zip(_NET.layers, net2.layers):
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.offsets, b.offsets) and a.shift == b.shift
    assert np.array_equal(_NET.head.codes, net2.head.codes)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(net2(x), _NET(x))
    m = mbit_to_model(f)
    assert torch.equal(torch.round(m(x)).long(), _NET(x))
    ins = inspect_mbit(f)
    assert ins["total_bits"] == 8 * p.stat().st_size


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1000), st.sampled_from(["raw", "tans", "rans"]), st.sampled_from([1, 4, 32]))
def test_roundtrip_property(seed, coder, streams):
    net = IntegerNQE.from_model(make_bsn_model(seed))
    net2 = mbit_to_integer(read_mbit(encode_mbit(net, coder=coder, n_streams=streams, raw_fallback=False)))
    assert all(np.array_equal(a.codes, b.codes) for a, b in zip(net.layers, net2.layers))


def test_entropy_coding_beats_raw_on_skewed_weights():
    import copy

    net = copy.deepcopy(_NET)
    rng = np.random.default_rng(0)
    for L in net.layers:  # 90% zeros where the grid has a zero level: cheap to code, not to raw-pack
        if L.levels % 2:
            L.codes[rng.random(L.codes.shape) < 0.9] = 0
    raw, tans = (inspect_mbit(read_mbit(encode_mbit(net, coder=c, raw_fallback=False))) for c in ("raw", "tans"))
    assert tans["weight_bits"] < 0.8 * raw["weight_bits"]
    assert mbit_to_integer(read_mbit(encode_mbit(net, coder="tans", raw_fallback=False))).layers[0].codes.tolist() == net.layers[0].codes.tolist()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_corruption_is_one_clean_error(data):
    buf = corrupt_bytes(_FILE, data)
    if buf is None:
        return
    with pytest.raises(MbitError):
        mbit_to_integer(read_mbit(buf))


def test_specific_errors(tmp_path):
    with pytest.raises(MbitError, match="magic"):
        read_mbit(b"XXXX" + _FILE[4:])
    bad = bytearray(_FILE)
    bad[4] = 9  # version (the header CRC catches it first unless recomputed)
    import zlib

    bad[12:16] = (zlib.crc32(bytes(bad[:12])) & 0xFFFFFFFF).to_bytes(4, "little")
    with pytest.raises(MbitError, match="version"):
        read_mbit(bytes(bad))
    with pytest.raises(MbitError, match="no such file"):
        read_mbit(tmp_path / "missing.mbit")
    with pytest.raises(MbitError, match="truncated"):
        read_mbit(_FILE[:40])


def test_version_1_files_still_read_and_upgrade_in_place_of_their_crcs():
    import struct
    import zlib

    from megabit.fmt import spec as S
    from megabit.fmt.mbit import upgrade_mbit

    # rebuild the v1 form of _FILE: version 1, section CRCs over the payload only
    v1 = bytearray(_FILE)
    v1[4:6] = struct.pack("<H", 1)
    v1[12:16] = (zlib.crc32(bytes(v1[:12])) & 0xFFFFFFFF).to_bytes(4, "little")
    pos = S.MBIT_HEADER.size
    while pos < len(v1):
        length = struct.unpack_from("<I", v1, pos + 4)[0]
        payload = bytes(v1[pos + 12 : pos + 12 + length])
        v1[pos + 8 : pos + 12] = (zlib.crc32(payload) & 0xFFFFFFFF).to_bytes(4, "little")
        pos += 12 + length
    v1 = bytes(v1)
    assert mbit_to_integer(read_mbit(v1)).head.codes.tolist() == _NET.head.codes.tolist()
    assert upgrade_mbit(v1) == _FILE  # same sections, v2 CRCs
    # the v2 CRC catches a flipped section-header field that v1 could not (here: the config's coder)
    flipped = bytearray(_FILE)
    flipped[S.MBIT_HEADER.size + 1] ^= 1
    with pytest.raises(MbitError, match="CRC mismatch in section 0"):
        read_mbit(bytes(flipped))
