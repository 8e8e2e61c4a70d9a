import dataclasses
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megabit.fmt.mbc import CRC, HEADER, MbcHeader, pack_bits, pack_mbc, unpack_bits, unpack_mbc

headers = st.builds(
    MbcHeader,
    width=st.integers(1, 300), height=st.integers(1, 300), channels=st.sampled_from([1, 2, 3, 4]),
    rate_bits=st.sampled_from([128, 256, 512]), model_id=st.integers(0, 65535),
    model_hash=st.binary(min_size=8, max_size=8), entropy_coded=st.booleans(),
).flatmap(lambda h: st.sampled_from([h, dataclasses.replace(h, ctx_coded=True)] if not h.entropy_coded else [h])
).flatmap(lambda h: st.sampled_from([h, dataclasses.replace(h, adaptive=True)] if not h.entropy_coded else [h]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=headers, seed=st.integers(0, 2**31))
def test_roundtrip(h, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (h.n_patches, h.rate_bits), dtype=np.uint8)
    payload = pack_bits(bits) if h.raw else rng.bytes(h.level_map_bytes + int(rng.integers(0, 50)))
    data = pack_mbc(h, payload)
    h2, p2 = unpack_mbc(data)
    assert h2 == h and p2 == payload
    assert data[:4] == b"MBCF" and len(data) == HEADER.size + len(payload) + CRC.size
    if h.raw:
        assert np.array_equal(unpack_bits(p2, h.n_patches, h.rate_bits), bits)


def test_little_endian_layout():
    h = MbcHeader(width=0x0102, height=0x0304, channels=4, rate_bits=256, model_id=7, model_hash=bytes(range(8)))
    d = pack_mbc(h, bytes(h.raw_payload_bytes))
    assert d[8:12] == b"\x02\x01\x00\x00" and d[12:16] == b"\x04\x03\x00\x00" and d[16:18] == b"\x00\x01"
    assert d[6] == 4 and d[7] == 32 and d[18:20] == b"\x07\x00" and d[20:28] == bytes(range(8))
    assert int.from_bytes(d[-4:], "little") == zlib.crc32(d[:-4])


def test_bit_order_lsb_first():
    assert pack_bits(np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 1]], np.uint8)) == b"\x01\x02"


_valid = pack_mbc(MbcHeader(70, 33, 3, 128, 1, b"abcdefgh"), bytes(range(96)))


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(_valid) - 1).map(lambda n: _valid[:n]),
    st.tuples(st.integers(0, len(_valid) - 1), st.integers(1, 255)).map(
        lambda t: _valid[: t[0]] + bytes([_valid[t[0]] ^ t[1]]) + _valid[t[0] + 1 :]),
))
def test_fuzz_only_valueerror(data):
    try:
        unpack_mbc(data)
    except ValueError as e:
        assert "\n" not in str(e)
    else:
        assert data == _valid  # any change is caught (CRC32 catches every single-byte change)


def test_rejects_both_codings():
    with pytest.raises(ValueError, match="at once"):
        pack_mbc(MbcHeader(10, 10, 3, 128, 1, bytes(8), entropy_coded=True, ctx_coded=True), b"x")


def test_rejects_bad_fields():
    with pytest.raises(ValueError):
        pack_mbc(MbcHeader(0, 10, 3, 128, 1, bytes(8)), b"")
    with pytest.raises(ValueError):
        pack_mbc(MbcHeader(10, 10, 3, 128, 1, bytes(8)), b"short")
    with pytest.raises(ValueError, match="version"):
        bad = bytearray(_valid)
        bad[4] = 9
        bad[-4:] = zlib.crc32(bytes(bad[:-4])).to_bytes(4, "little")
        unpack_mbc(bytes(bad))
