"""The ``.mbc`` image bitstream of the patch codec (spec: ``docs/format-mbc.md``).

All integers little-endian. Layout::

    off  size  field
      0     4  magic b"MBCF"
      4     1  version (1)
      5     1  flags: bit 0 = entropy coded (two rANS passes, bit table), bit 1 = context coded
               (causal context model, one rANS pass); at most one of the two; bit 2 = adaptive
               rate (a rate per patch; not with bit 0); other bits 0
      6     1  channels of the source image (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA); output is RGB
      7     1  patch size (32)
      8     4  width  u32 (source image, pixels)
     12     4  height u32
     16     2  rate: code bits per patch u16 (128 / 256 / 512); adaptive: the largest patch rate
     18     2  model id u16 (table in megabit.codec.registry; 0 = a model file given by path)
     20     8  model hash: sha256(encoder weights + bit-probability table)[:8]
     28     2  grid width  u16 = ceil(width / patch)
     30     2  grid height u16 = ceil(height / patch)
     32     4  payload length u32
     36     n  payload: raw = code bits, patch-major (row-major patches), bit b of patch p at bit
               index p*rate + b, packed LSB-first; entropy coded = megabit.codec.entropy_model blob;
               context coded = megabit.codec.context_model blob; adaptive: first the rate map,
               2 bits per patch (index into the model's rates, ascending), packed LSB-first,
               ceil(P/4) bytes, then the code bits of every patch at its own rate
   36+n     4  CRC32 (zlib) of bytes [0, 36+n)

Every reader error (short file, wrong magic/version, inconsistent fields, CRC mismatch) raises
``ValueError`` with a one-line message.

>>> h = MbcHeader(width=40, height=20, channels=3, rate_bits=128, model_id=1, model_hash=bytes(8))
>>> h.grid, len(pack_bits(np.zeros((h.n_patches, 128), np.uint8)))
((2, 1), 32)
>>> unpack_mbc(pack_mbc(h, b"x" * 32))[0] == h
True
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["MAGIC", "VERSION", "HEADER", "FLAG_ENTROPY", "FLAG_CTX", "FLAG_ADAPTIVE", "MbcHeader", "pack_mbc", "unpack_mbc", "pack_bits",
           "unpack_bits", "pack_levels", "unpack_levels", "MAX_PIXELS"]

MAGIC = b"MBCF"
VERSION = 1
BYTE_ORDER = "little"
#: magic, version, flags, channels, patch, width, height, rate, model id, hash, grid w, grid h, payload len
HEADER = struct.Struct("<4sBBBBIIHH8sHHI")
CRC = struct.Struct("<I")
FLAG_ENTROPY = 1
FLAG_CTX = 2  # payload coded with the model's causal context model (megabit.codec.context_model)
FLAG_ADAPTIVE = 4  # a rate per patch: the payload starts with the rate map (megabit.codec.ratecontrol)
LEVEL_BITS = 2  # bits per patch of the rate map: an index into the model's rates (at most 4 rates)
MAX_PIXELS = 1 << 28  # refuse absurd sizes before allocating anything


@dataclass(frozen=True)
class MbcHeader:
    width: int
    height: int
    channels: int
    rate_bits: int
    model_id: int
    model_hash: bytes
    entropy_coded: bool = False
    patch: int = 32
    ctx_coded: bool = False
    adaptive: bool = False

    @property
    def raw(self) -> bool:
        """Fixed-rate payload (packed bits, length known from the header)."""
        return not (self.entropy_coded or self.ctx_coded or self.adaptive)

    @property
    def level_map_bytes(self) -> int:
        """Bytes of the rate map at the start of an adaptive payload (0 otherwise)."""
        return (self.n_patches * LEVEL_BITS + 7) // 8 if self.adaptive else 0

    @property
    def grid(self) -> tuple[int, int]:
        """(grid width, grid height) in patches."""
        return math.ceil(self.width / self.patch), math.ceil(self.height / self.patch)

    @property
    def n_patches(self) -> int:
        gw, gh = self.grid
        return gw * gh

    @property
    def raw_payload_bytes(self) -> int:
        return (self.n_patches * self.rate_bits + 7) // 8

    def validate(self) -> None:
        if not (1 <= self.width and 1 <= self.height and self.width * self.height <= MAX_PIXELS):
            raise ValueError(f"invalid image size {self.width}x{self.height}")
        if self.channels not in (1, 2, 3, 4):
            raise ValueError(f"invalid channel count {self.channels}")
        if self.patch != 32:
            raise ValueError(f"unsupported patch size {self.patch}")
        if not 0 < self.rate_bits <= 4096 or self.rate_bits % 8:
            raise ValueError(f"invalid rate {self.rate_bits} bits/patch")
        if not 0 <= self.model_id < 1 << 16 or len(self.model_hash) != 8:
            raise ValueError("invalid model id or hash")
        gw, gh = self.grid
        if self.entropy_coded and self.ctx_coded:
            raise ValueError("invalid .mbc flags: table- and context-coded at once")
        if self.entropy_coded and self.adaptive:
            raise ValueError("invalid .mbc flags: table-coded with an adaptive rate")
        if gw >= 1 << 16 or gh >= 1 << 16:
            raise ValueError(f"image {self.width}x{self.height} too large for the patch grid")


def pack_bits(bits: np.ndarray) -> bytes:
    """uint8 0/1 [P, R] -> bytes, bit index p*R + b, LSB-first within each byte."""
    return np.packbits(np.asarray(bits, np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_bits(payload: bytes, n_patches: int, rate_bits: int) -> np.ndarray:
    need = (n_patches * rate_bits + 7) // 8
    if len(payload) != need:
        raise ValueError(f"corrupted .mbc: payload has {len(payload)} bytes, expected {need}")
    b = np.unpackbits(np.frombuffer(payload, np.uint8), bitorder="little")[: n_patches * rate_bits]
    return b.reshape(n_patches, rate_bits)


def pack_mbc(h: MbcHeader, payload: bytes) -> bytes:
    """Header + payload + CRC32."""
    h.validate()
    if h.raw and len(payload) != h.raw_payload_bytes:
        raise ValueError(f"raw payload must be {h.raw_payload_bytes} bytes, got {len(payload)}")
    gw, gh = h.grid
    flags = FLAG_ENTROPY * h.entropy_coded | FLAG_CTX * h.ctx_coded | FLAG_ADAPTIVE * h.adaptive
    if len(payload) < h.level_map_bytes:
        raise ValueError(f"adaptive payload shorter than its rate map ({h.level_map_bytes} bytes)")
    head = HEADER.pack(MAGIC, VERSION, flags, h.channels, h.patch, h.width,
                       h.height, h.rate_bits, h.model_id, bytes(h.model_hash), gw, gh, len(payload))
    body = head + bytes(payload)
    return body + CRC.pack(zlib.crc32(body))


def unpack_mbc(data: bytes) -> tuple[MbcHeader, bytes]:
    """Parse and check a .mbc file; returns (header, payload). ValueError on any inconsistency."""
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise ValueError("not a megabit .mbc file (bad magic)")
    if len(data) < HEADER.size + CRC.size:
        raise ValueError(f"truncated .mbc file ({len(data)} bytes)")
    (magic, ver, flags, ch, patch, w, hgt, rate, mid, mhash, gw, gh, n) = HEADER.unpack_from(data, 0)
    if ver != VERSION:
        raise ValueError(f"unsupported .mbc version {ver} (this reader: {VERSION})")
    if len(data) != HEADER.size + n + CRC.size:
        raise ValueError(f"truncated or padded .mbc file: {len(data)} bytes, header says {HEADER.size + n + CRC.size}")
    (crc,) = CRC.unpack_from(data, len(data) - CRC.size)
    if zlib.crc32(data[: -CRC.size]) != crc:
        raise ValueError("corrupted .mbc file (CRC mismatch)")
    if flags & ~(FLAG_ENTROPY | FLAG_CTX | FLAG_ADAPTIVE):
        raise ValueError(f"unknown .mbc flags {flags:#x}")
    h = MbcHeader(w, hgt, ch, rate, mid, mhash, bool(flags & FLAG_ENTROPY), patch, bool(flags & FLAG_CTX),
                  bool(flags & FLAG_ADAPTIVE))
    h.validate()
    if h.grid != (gw, gh):
        raise ValueError(f"corrupted .mbc: grid {gw}x{gh} does not match size {w}x{hgt}")
    payload = data[HEADER.size : HEADER.size + n]
    if h.raw and n != h.raw_payload_bytes:
        raise ValueError(f"corrupted .mbc: payload has {n} bytes, expected {h.raw_payload_bytes}")
    if n < h.level_map_bytes:
        raise ValueError(f"corrupted .mbc: adaptive payload of {n} bytes has no room for its rate map")
    return h, payload


def pack_levels(levels: np.ndarray) -> bytes:
    """Rate map of an adaptive file: int [P] in 0..3 -> ceil(P/4) bytes (2 bits each, LSB-first)."""
    lv = np.asarray(levels, np.int64).reshape(-1)
    if lv.size and (lv.min() < 0 or lv.max() >= 1 << LEVEL_BITS):
        raise ValueError(f"rate levels must be in 0..{(1 << LEVEL_BITS) - 1}")
    b = ((lv[:, None] >> np.arange(LEVEL_BITS)) & 1).astype(np.uint8)
    return np.packbits(b.reshape(-1), bitorder="little").tobytes()


def unpack_levels(data: bytes, n_patches: int) -> np.ndarray:
    """Inverse of :func:`pack_levels` (``data`` exactly ceil(P/4) bytes)."""
    b = np.unpackbits(np.frombuffer(bytes(data), np.uint8), bitorder="little")[: n_patches * LEVEL_BITS]
    return (b.reshape(n_patches, LEVEL_BITS).astype(np.int64) << np.arange(LEVEL_BITS)).sum(1)
