"""Where every byte of an exported model lives: const arrays (flash) and static buffers (RAM).

The exporter lays the model out once (:func:`layout`) and both the code generator and the memory
map read that layout, so the map describes exactly the arrays that ``model.c`` defines and the
buffers ``mb_runtime.c`` declares. Sizes of const data and buffers are exact up to the
compiler's alignment padding between arrays; the code size is an estimate (it depends on the
target and the compiler), measured with gcc -O2 on x86-64 and rounded up.

Flash: coded weights | decode tables (or frequency tables with ``lut="ram"``) | tANS initial
states | int32 BSN offsets and head bias | 44-byte layer descriptors | code.
RAM: two ping-pong activation buffers (int8, one byte per activation) | one decoded filter
(int8) | one int32 accumulator plane | head sums | decoder state | the RAM decode table when
``lut="ram"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...fmt import spec as S
from .plan import KIND_CODE, KIND_CONV, KIND_HEAD, CModel

__all__ = ["DESCRIPTOR_BYTES", "CODE_ESTIMATE_BYTES", "Layout", "layout", "memory_map", "MBIT"]

MBIT = 1 << 20
DESCRIPTOR_BYTES = 44  # sizeof(mb_layer), fixed-width fields, no padding (asserted in model.c)
LUT_ENTRY_BYTES = 4  # sizeof(mb_tans_entry)
#: code of mb_runtime.c + main.c (text, gcc 12 -O2 x86-64 measured ~3.6 KB + ~0.8 KB; rounded up;
#: Thumb-2 code is usually smaller). An estimate: the real number comes from `size`.
CODE_ESTIMATE_BYTES = {"runtime": 4096, "main": 1024}
#: sizeof(mb_decoder) without its state array, for 32-bit pointers (64-bit hosts: +8)
DECODER_FIXED_BYTES = 42


@dataclass
class Layout:
    """Offsets of every layer's data inside the model's const arrays, and the buffer sizes."""

    lut_mode: str
    stream_off: list[int] = field(default_factory=list)
    lut_off: list[int] = field(default_factory=list)  # entry offset (flash) or freq offset (ram)
    state_off: list[int] = field(default_factory=list)
    param_off: list[int] = field(default_factory=list)
    weight_data: bytes = b""
    luts: list[np.ndarray] = field(default_factory=list)  # dec_lut uint32 arrays, deduplicated
    freqs: list[int] = field(default_factory=list)  # lut="ram": concatenated frequency tables
    init_states: list[int] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    buf: tuple[int, int] = (0, 0)
    wscratch: int = 0
    acc_words: int = 0
    sums_words: int = 0
    max_streams: int = 1
    lut_ram_entries: int = 0
    max_alphabet: int = 1

    @property
    def param_bytes(self) -> int:
        """2: every param (BSN offsets, packed multiplier/shift words, head biases) fits int16, so
        ``mb_param_t`` is int16_t (the usual case: offsets and biases are stored in <= 16 bits); else 4."""
        return 2 if all(-(1 << 15) <= v < (1 << 15) for v in self.params) else 4

    @property
    def lut_entries(self) -> int:
        return sum(len(t) for t in self.luts)


def layout(m: CModel, lut: str = "flash") -> Layout:
    from ...entropy.tans import build_tables

    if lut not in ("flash", "ram"):
        raise ValueError(f"lut must be 'flash' or 'ram', got {lut!r}")
    lay = Layout(lut)
    data = bytearray()
    lut_index: dict[tuple, int] = {}
    for L in m.layers:
        lay.stream_off.append(len(data))
        data += L.stream
        lay.param_off.append(len(lay.params))
        lay.params += [int(v) for v in L.params]
        lay.state_off.append(len(lay.init_states))
        if L.coder == S.CODER_TANS:
            lay.init_states += list(L.init_states)
            lay.max_streams = max(lay.max_streams, L.n_streams)
            lay.max_alphabet = max(lay.max_alphabet, len(L.freqs))
            lay.lut_ram_entries = max(lay.lut_ram_entries, 1 << L.code_bits)
            if lut == "ram":
                lay.lut_off.append(len(lay.freqs))
                lay.freqs += list(L.freqs)
            else:
                key = (L.code_bits, L.freqs)
                if key not in lut_index:
                    lut_index[key] = lay.lut_entries
                    lay.luts.append(np.asarray(build_tables(np.asarray(L.freqs), L.code_bits).dec_lut))
                lay.lut_off.append(lut_index[key])
        else:
            lay.lut_off.append(0)
    lay.weight_data = bytes(data)
    # ping-pong: tensor t_i (t_0 the input, t_i the output of conv i) lives in buffer i % 2
    sizes = [m.in_channels * m.in_h * m.in_w] + [L.out_elems for L in m.convs]
    lay.buf = (max(sizes[0::2]), max(sizes[1::2], default=1))
    lay.wscratch = max(L.filter_size for L in m.layers)
    lay.acc_words = max((L.h * L.w for L in m.convs), default=1)
    lay.sums_words = 1 if m.is_encoder else m.head.cin
    return lay


def _nonempty(n: int) -> int:
    return max(n, 1)  # C99 has no zero-length arrays: an unused table is emitted with one element


def memory_map(m: CModel, lay: Layout) -> dict:
    """Flash and RAM of the exported model, itemized (bytes)."""
    flash_data = {
        "weights": _nonempty(len(lay.weight_data)),
        "decode_tables": (LUT_ENTRY_BYTES * _nonempty(lay.lut_entries)) if lay.lut_mode == "flash" else 2 * _nonempty(len(lay.freqs)),
        "tans_init_states": 2 * _nonempty(len(lay.init_states)),
        "params": lay.param_bytes * _nonempty(len(lay.params)),
        "descriptors": DESCRIPTOR_BYTES * len(m.layers),
    }
    data_total = sum(flash_data.values())
    ram = {
        "activations_ping": lay.buf[0],
        "activations_pong": lay.buf[1],
        "weight_scratch": lay.wscratch,
        "accumulator_plane": 4 * lay.acc_words,
        "head_sums": 0 if m.is_encoder else 4 * lay.sums_words,
        "decoder_state": (DECODER_FIXED_BYTES + 2 * lay.max_streams + 3) // 4 * 4,
    }
    if lay.lut_mode == "ram":
        ram["decode_table"] = LUT_ENTRY_BYTES * _nonempty(lay.lut_ram_entries) + 2 * lay.max_alphabet
    code = sum(CODE_ESTIMATE_BYTES.values())
    layers = []
    for L, so in zip(m.layers, lay.stream_off):
        layers.append({"name": L.name, "kind": {KIND_CONV: "conv", KIND_CODE: "code"}.get(L.kind, "head"),
                       "coder": S.CODER_NAMES[L.coder], "levels": L.levels, "weights": L.n_weights,
                       "coded_bytes": len(L.stream), "coded_bits": L.stream_bits,
                       "bits_per_weight": L.stream_bits / L.n_weights if L.n_weights else 0.0,
                       "tans_table_log": L.code_bits if L.coder == S.CODER_TANS else None,
                       "tans_streams": L.n_streams or None, "stream_offset": so,
                       "input": [L.cin, L.h, L.w], "output": [L.cout, L.out_h, L.out_w] if L.kind != KIND_HEAD else [L.cout],
                       "macs": L.macs})
    ram_total = sum(ram.values())
    return {
        "model": m.name, "kind": "patch-encoder" if m.is_encoder else "classifier", "source": m.source,
        "image": [m.in_channels, m.in_h, m.in_w], "lut": lay.lut_mode,
        "flash": {"data": flash_data, "data_total": data_total, "code_estimate": code,
                  "code_estimate_parts": dict(CODE_ESTIMATE_BYTES), "total": data_total + code},
        "ram": {"buffers": ram, "total": ram_total,
                "app_io": {"image": m.in_channels * m.in_h * m.in_w}
                | ({"code_bits": m.code_bits} if m.is_encoder else {"logits": 8 * m.num_classes})},
        "budget": {"limit_bits": MBIT, "flash_data_bits": 8 * data_total, "flash_data_fits": 8 * data_total <= MBIT,
                   "coded_weight_bits": sum(L.stream_bits for L in m.layers),
                   "flash_total_bits": 8 * (data_total + code), "ram_bits": 8 * ram_total},
        "macs_per_image": sum(L.macs for L in m.layers),
        "layers": layers,
        "notes": "bytes; const data and buffers exact up to alignment padding; code is an estimate "
                 "(gcc -O2, x86-64); decoder_state assumes 32-bit pointers",
    }
