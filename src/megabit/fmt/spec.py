"""On-disk constants of megabit's file formats, in one place (see docs/format.md).

All multi-byte integers are little-endian. Ids written to files are explicit integers here,
never dict order.
"""

from __future__ import annotations

import struct

BYTE_ORDER = "little"

# --- packed model file (.mbit) -----------------------------------------------------------
MBIT_MAGIC = b"MBIT"
MBIT_VERSION = 2
#: versions this megabit reads: 1 (section CRC over the payload only) and 2 (over the section
#: header's tag/coder/index/length *and* the payload, so a flipped header field is caught too)
MBIT_READ_VERSIONS = (1, 2)
#: header: magic[4], version u16, flags u16, n_sections u32, crc32(bytes 0..11) u32
MBIT_HEADER = struct.Struct("<4sHHII")
#: section header: tag u8, coder u8, index u16, payload length u32, crc32 u32
#: (v2: crc32 of the section header's first 8 bytes followed by the payload; v1: of the payload)
MBIT_SECTION = struct.Struct("<BBHII")

SECTION_CONFIG = 1  # UTF-8 JSON: {"kind": ..., "config": {...}, "meta": {...}}
SECTION_CONV = 2  # one conv layer: weights + BSN shift/offsets
SECTION_HEAD = 3  # classifier head: weights + bias
SECTION_CODE = 4  # patch encoder code layer: 1x1 conv + BSN offset + sign (CONV payload layout)
SECTION_QTENSOR = 5  # kinds "resnet", "lic": one quantized weight tensor (steps + coded level indices)
SECTION_FLOAT = 6  # kinds "resnet", "lic": one float32 tensor (BatchNorm, bias, unquantized weights)
SECTION_NAMES = {SECTION_CONFIG: "config", SECTION_CONV: "conv", SECTION_HEAD: "head", SECTION_CODE: "code",
                 SECTION_QTENSOR: "qtensor", SECTION_FLOAT: "float"}
KINDS = ("nqe-classifier", "patch-encoder", "resnet", "lic")

#: weight coders (the ``coder`` byte of a section)
CODER_NONE = 0
CODER_RAW = 1  # ceil(log2(levels)) bits per weight, LSB-first
CODER_TANS = 2  # megabit.entropy.tans payload
CODER_RANS = 3  # megabit.entropy.rans payload
CODERS = {"raw": CODER_RAW, "tans": CODER_TANS, "rans": CODER_RANS}
CODER_NAMES = {v: k for k, v in CODERS.items()} | {CODER_NONE: "none"}

#: conv section fixed part: levels u8, shift u8, offset_bits u8, groups u8, n_weights u32,
#: out_channels u16, table_bytes u16
MBIT_CONV = struct.Struct("<BBBBIHH")
#: head section fixed part: levels u8, bias_bits u8, classes u16, in_features u16, table_bytes u16
MBIT_HEAD = struct.Struct("<BBHHH")

#: qtensor section fixed part: levels u16, n_steps u16, n_weights u32, table_bytes u32; then
#: n_steps float32 steps, the frequency table, the weight payload
MBIT_QTENSOR = struct.Struct("<HHII")

MAX_CONFIG_BYTES = 1 << 20
MAX_SECTIONS = 4096
