"""What the C runtime executes: layer descriptors holding the weights in their coded form.

A :class:`CModel` is read from a ``.mbit`` file without re-encoding anything: each layer keeps
its section's weight payload as stored (tANS bitstream + initial states + frequency table, or
the raw bit-packed codes), its BSN offsets/shift, and the geometry the exporter needs to size
static buffers. Everything the runtime cannot express is rejected here with a one-line
``ValueError``, so a model that exports always compiles and runs bit-exactly.

Descriptor semantics (one per layer, ``kind`` conv, head or code)::

    conv:  acc = conv(x, W, groups, 'same');  u = (acc + o_c) >> rshift   (<< -rshift if < 0)
           x' = clamp(u, 0, 2^act_bits - 1);  2x2 max-pool if pool        rshift = shift - act_bits
    head:  logits = W . sum_hw(x) + bias                                   (int64)
    code:  acc = conv1x1(x, W);  bit = (acc + o_c >= 0)                    (patch encoder output)

A classifier ends with a head, a patch encoder (``.mbit`` kind "patch-encoder") with a code layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...entropy import _common as ANS
from ...entropy.freq import freqs_from_bytes
from ...fmt import spec as S
from ...fmt.mbit import MbitFile, _norm_field_bits, _split, decode_conv, decode_head, read_mbit
from ...models.nqe import LayerSpec, NQEConfig, PRESETS
from ...quant.weight import bits_per_code

__all__ = ["KIND_CONV", "KIND_HEAD", "KIND_CODE", "CLayer", "CModel", "check_exportable", "plan_model", "load_mbit"]

KIND_CONV = 1  # == MB_KIND_CONV in runtime/mb_runtime.h
KIND_HEAD = 2  # == MB_KIND_HEAD
KIND_CODE = 3  # == MB_KIND_CODE
INT32_MAX = (1 << 31) - 1
U16_MAX = (1 << 16) - 1


@dataclass(frozen=True)
class CLayer:
    """One runtime layer (the Python image of ``mb_layer``) plus its coded data."""

    name: str
    kind: int
    coder: int  # S.CODER_RAW or S.CODER_TANS
    levels: int
    kernel: int
    pool: bool
    rshift: int
    code_bits: int  # tANS table_log, raw bits per code
    cin: int
    cout: int
    groups: int
    h: int  # input height / width
    w: int
    n_weights: int
    stream: bytes  # coded weights, ceil(stream_bits / 8) bytes
    stream_bits: int
    params: np.ndarray  # int64: conv offsets o_c (cout) or head bias (classes)
    n_streams: int = 0  # tANS K
    init_states: tuple[int, ...] = ()
    freqs: tuple[int, ...] = ()  # tANS frequency table (sum 2**table_log)
    max_abs_acc: int = 0  # bound on |acc + o| over all inputs (int32 check)

    @property
    def out_h(self) -> int:
        return self.h // 2 if self.pool else self.h

    @property
    def out_w(self) -> int:
        return self.w // 2 if self.pool else self.w

    @property
    def filter_size(self) -> int:
        """Weights decoded at a time: one filter (conv) or one row (head)."""
        return self.n_weights // self.cout

    @property
    def in_elems(self) -> int:
        return self.cin * self.h * self.w

    @property
    def out_elems(self) -> int:
        return self.cout * self.out_h * self.out_w if self.kind != KIND_HEAD else 0

    @property
    def macs(self) -> int:
        return self.n_weights * self.h * self.w if self.kind != KIND_HEAD else self.n_weights


@dataclass(frozen=True)
class CModel:
    name: str
    in_channels: int
    in_h: int
    in_w: int
    num_classes: int
    act_bits: int
    layers: tuple[CLayer, ...]
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def is_encoder(self) -> bool:
        """A patch encoder (ends with a code layer) rather than a classifier (ends with a head)."""
        return self.layers[-1].kind == KIND_CODE

    @property
    def code_bits(self) -> int:
        """Bits the patch encoder outputs per patch (0 for a classifier)."""
        return self.layers[-1].out_elems if self.is_encoder else 0

    @property
    def convs(self) -> tuple[CLayer, ...]:
        """Layers that write an activation map (conv blocks and the code layer)."""
        return tuple(L for L in self.layers if L.kind != KIND_HEAD)

    @property
    def head(self) -> CLayer:
        return self.layers[-1]


RSHIFT_PER_CHANNEL = -128  # descriptor rshift: the layer's params are o_c, then M_c << 8 | (rshift_c + 128) (mb_runtime.h)


def check_exportable(cfg: NQEConfig, image_size: tuple[int, int] = (32, 32), encoder: bool = False) -> None:
    """Raise ``ValueError`` (one line) if the runtime cannot express this configuration.

    ``encoder``: the conv blocks of a patch encoder (no head; its code layer is checked in plan_model).
    """
    if cfg.act_bits != 2:
        raise ValueError(f"C export supports 2-bit activations only (model has act_bits={cfg.act_bits})")
    if cfg.act_mode != "floor":
        raise ValueError(f"C export implements HWMSB with floor; model has act_mode={cfg.act_mode!r}")
    if not cfg.quantize:
        raise ValueError("C export needs a quantized model (quantize=True)")
    h, w = image_size
    if not (1 <= h <= U16_MAX and 1 <= w <= U16_MAX):
        raise ValueError(f"image size {h}x{w} out of range")
    if not 1 <= cfg.in_channels <= U16_MAX or not 1 <= cfg.num_classes <= U16_MAX:
        raise ValueError("input channels / classes out of range for the runtime (1..65535)")
    if not encoder and cfg.head_bias_bits > 32:
        raise ValueError(f"head bias of {cfg.head_bias_bits} bits does not fit the runtime's int32")
    if not encoder:
        _check_levels("head", cfg.head_levels)
    cin = cfg.in_channels
    for i, L in enumerate(cfg.layers):
        name = f"blocks.{i}"
        if L.kernel < 1 or L.kernel % 2 == 0:
            raise ValueError(f"{name}: kernel {L.kernel} is not supported (the runtime's 'same' conv needs an odd kernel)")
        _check_levels(name, L.levels)
        if L.groups < 1 or cin % L.groups or L.out % L.groups:
            raise ValueError(f"{name}: channels {cin}->{L.out} not divisible by groups={L.groups}")
        if max(cin, L.out, L.groups) > U16_MAX:
            raise ValueError(f"{name}: more than 65535 channels")
        if L.pool:
            if h < 2 or w < 2:
                raise ValueError(f"{name}: 2x2 max-pool of a {h}x{w} map")
            h, w = h // 2, w // 2
        cin = L.out


def _check_levels(name: str, levels: int) -> None:
    if not 2 <= levels <= 255:
        raise ValueError(f"{name}: {levels} weight levels; the runtime supports 2..255")
    if levels % 2 == 0 and levels > 128:
        raise ValueError(f"{name}: {levels} even levels give codes up to ±{levels - 1}, beyond int8")


def load_mbit(src: str | os.PathLike | bytes | MbitFile) -> tuple[MbitFile, str]:
    """A parsed .mbit from a path, bytes, an MbitFile, or a bundled name (``nqe-1mbit``, ``codec-nested``)."""
    if isinstance(src, MbitFile):
        return src, src.config.name or "model"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return read_mbit(bytes(src)), "<bytes>"
    s = str(src)
    from ...codec.registry import MODELS as CODEC_MODELS

    if s in {n for n, _ in CODEC_MODELS.values()} and not Path(s).exists():
        # the edge half of a bundled patch codec, packed with tANS (what `megabit pack NAME` writes)
        from ...codec.api import load_codec
        from ...export.integer import IntegerPatchEncoder
        from ...fmt.mbit import encode_mbit

        enc = IntegerPatchEncoder.from_model(load_codec(s).model)
        return read_mbit(encode_mbit(enc, coder="tans", meta={"source": f"bundled {s}"})), f"bundled {s} (patch encoder)"
    if s in PRESETS and not Path(s).exists():
        from ...hub import bundled_classifier_path

        p = bundled_classifier_path(s)
        if p is None:
            raise ValueError(f"no trained model is bundled for {s!r} (give a .mbit path)")
        return read_mbit(p), f"bundled {s}"
    return read_mbit(s), s


def _coded(sec_coder: int, levels: int, n: int, table: bytes, payload: bytes, name: str) -> dict:
    """Split a section's weight payload into what the C decoder needs."""
    if sec_coder == S.CODER_RAW:
        b = bits_per_code(levels)
        return {"coder": S.CODER_RAW, "code_bits": b, "stream": bytes(payload), "stream_bits": n * b}
    if sec_coder == S.CODER_RANS:
        raise ValueError(f"{name}: rANS-coded weights are not supported by the C runtime "
                         "(re-pack with `megabit pack --coder tans` or `--coder raw`)")
    if sec_coder != S.CODER_TANS:
        raise ValueError(f"{name}: unknown weight coder {sec_coder}")
    freqs, _ = freqs_from_bytes(table)
    log, K, n, n_bits, body = ANS.unpack_header(payload, b"tANS", True)
    if len(freqs) > levels or int(freqs.sum()) != 1 << log:
        raise ValueError(f"{name}: bad tANS frequency table")
    if K > U16_MAX:
        raise ValueError(f"{name}: {K} tANS streams (max 65535)")
    init = tuple(int(v) for v in np.frombuffer(bytes(body[: 2 * K]), dtype="<u2"))
    return {"coder": S.CODER_TANS, "code_bits": int(log), "stream": bytes(body[2 * K :]), "stream_bits": int(n_bits),
            "n_streams": int(K), "init_states": init, "freqs": tuple(int(v) for v in freqs)}


def _conv_data(s, IL, name: str, x_max: int, cfg: NQEConfig | None = None,
               spec: LayerSpec | None = None) -> tuple[dict, np.ndarray, int]:
    """A conv/code section's coded weights, its int64 offsets, and the int32-checked accumulator bound.

    ``cfg`` (conv sections): the file's config, for the length of the BSN field and the multipliers
    ``M_c`` of a per-channel BSN / BSN mantissa ([I]; the bound is then that of ``acc * M_c + o_c``); ``spec``:
    the block, for its own shift width."""
    fixed = S.MBIT_CONV.unpack_from(s.payload, 0)
    _, table, payload = _split(s.payload, S.MBIT_CONV.size, 1, _norm_field_bits(cfg, fixed[5], fixed[2], spec), fixed[6])
    coded = _coded(s.coder, IL.levels, IL.codes.size, table, payload, name)
    off = IL.offsets.astype(np.int64)
    bound = int((np.abs(IL.codes.astype(np.int64)).reshape(IL.codes.shape[0], -1).sum(1) * x_max * IL.multipliers).max())
    bound += int(np.abs(off).max()) if off.size else 0
    if bound > INT32_MAX:
        raise ValueError(f"{name}: accumulator may reach {bound}, beyond int32")
    return coded, off, bound


def plan_model(src: str | os.PathLike | bytes | MbitFile, image_size: tuple[int, int] = (32, 32)) -> CModel:
    """Read a .mbit (path, bytes, MbitFile or bundled name) into runtime descriptors.

    Every section is also fully decoded once (the Python decoder checks the CRCs and that the
    payload decodes exactly), which gives the accumulator bounds checked against int32.
    """
    f, source = load_mbit(src)
    cfg = f.config
    encoder = f.kind == "patch-encoder"
    if encoder and tuple(image_size) != (32, 32):
        raise ValueError(f"a patch encoder runs on 32x32 patches (got --image-size {image_size[0]} {image_size[1]})")
    check_exportable(cfg, image_size, encoder)
    h, w = image_size
    layers, cin, top = [], cfg.in_channels, (1 << cfg.act_bits) - 1
    x_max = 128  # |pixel - 128| <= 128 in the first layer, activation codes <= top after
    for s in f.sections[1:]:
        if s.tag == S.SECTION_CONV:
            name = f"blocks.{s.index}"
            spec = cfg.layers[s.index]
            IL = decode_conv(s, cfg, cin)
            coded, off, bound = _conv_data(s, IL, name, x_max, cfg, spec)
            rs = np.asarray(IL.shift, np.int64) + IL.mantissa_bits - cfg.act_bits
            if rs.min() < -28 or rs.max() > 31:
                raise ValueError(f"{name}: BSN shift {IL.shift} out of the runtime's range ({cfg.act_bits - 28}..{cfg.act_bits + 31})")
            if IL.per_channel or IL.mantissa_bits:  # [I] per-channel BSN: params o_c, then M_c and rshift_c in one word
                off = np.concatenate([off, (IL.multipliers.astype(np.int64) << 8) | (np.broadcast_to(rs, off.shape) + 128)])
                rshift = RSHIFT_PER_CHANNEL
            else:
                rshift = int(rs)
            layers.append(CLayer(name, KIND_CONV, levels=IL.levels, kernel=spec.kernel, pool=spec.pool, rshift=rshift,
                                 cin=cin, cout=IL.codes.shape[0], groups=IL.groups, h=h, w=w, n_weights=IL.codes.size,
                                 params=off, max_abs_acc=bound, **coded))
            if spec.pool:
                h, w = h // 2, w // 2
            cin, x_max = IL.codes.shape[0], top
        elif s.tag == S.SECTION_CODE:
            IL = decode_conv(s, cfg, cin, f.codec_config)
            _check_levels("code", IL.levels)
            coded, off, bound = _conv_data(s, IL, "code", x_max)
            layers.append(CLayer("code", KIND_CODE, levels=IL.levels, kernel=1, pool=False, rshift=0, cin=cin,
                                 cout=IL.codes.shape[0], groups=1, h=h, w=w, n_weights=IL.codes.size,
                                 params=off, max_abs_acc=bound, **coded))
        elif s.tag == S.SECTION_HEAD:
            IH = decode_head(s, cfg, cin)
            fixed = S.MBIT_HEAD.unpack_from(s.payload, 0)
            _, table, payload = _split(s.payload, S.MBIT_HEAD.size, fixed[2], fixed[1], fixed[4])
            coded = _coded(s.coder, IH.levels, IH.codes.size, table, payload, "head")
            if h * w * top > INT32_MAX:
                raise ValueError("head: sum-pool may overflow int32")
            layers.append(CLayer("head", KIND_HEAD, levels=IH.levels, kernel=1, pool=False, rshift=0, cin=cin,
                                 cout=IH.codes.shape[0], groups=1, h=h, w=w, n_weights=IH.codes.size,
                                 params=IH.bias.astype(np.int64), **coded))
    return CModel(cfg.name or "model", cfg.in_channels, image_size[0], image_size[1], 0 if encoder else cfg.num_classes,
                  cfg.act_bits, tuple(layers), source, dict(f.meta))
