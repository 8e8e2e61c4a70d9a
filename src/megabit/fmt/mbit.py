"""The packed model file ``.mbit``: a runnable integer network, entropy-coded or raw.

Layout (little-endian; constants in :mod:`megabit.fmt.spec`, prose in docs/format.md)::

    header   "MBIT" | version u16 | flags u16 | n_sections u32 | crc32(previous 12 bytes) u32
    section  tag u8 | coder u8 | index u16 | length u32 | crc32(those 8 bytes + payload) u32 | payload[length]
             (version 1 files, still read: crc32(payload) only)
      CONFIG  JSON {"kind": "nqe-classifier", "config": NQEConfig.to_dict(), "meta": {...}}
      CONV    levels u8 | shift u8 | offset_bits u8 | groups u8 | n_weights u32 | out u16 |
              table_bytes u16 | offsets (out x offset_bits, two's complement, LSB-first bits,
              zero-padded to a byte) | frequency table (table_bytes) | weight payload
              [I] with a per-channel BSN or a BSN mantissa (config bsn_granularity "channel" /
              bsn_mantissa_bits B > 0) the offsets' bit field goes on with the shifts (n x shift_bits,
              n = out per channel, else 1; the shift byte is then 0) and the mantissas (n x B) before
              its byte padding
      HEAD    levels u8 | bias_bits u8 | classes u16 | in u16 | table_bytes u16 |
              bias (classes x bias_bits, packed like offsets) | table | weight payload
      CODE    (kind "patch-encoder" only, instead of HEAD) the code layer: CONV's layout, a 1x1
              conv whose output bit is (acc + o_c >= 0); the CONFIG JSON adds "codec_config"

Weight symbols are level indices ``0..levels-1`` (position in ``code_range(levels)``); the
payload is raw bit-packed (``coder=raw``) or a :mod:`megabit.entropy` tANS/rANS payload. Every
byte of the file belongs to exactly one accounted part (:func:`inspect_mbit`), so the reported
size equals the file size.

Reading checks magic, version, lengths and every CRC before anything is decoded; any mismatch
raises :class:`MbitError` (a ``ValueError``) with a one-line reason.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..export.bitpack import (MBIT, _BitReader, _BitWriter, _codes_to_index, bsn_scale_count, pack_bits, read_scales,
                              unpack_bits, write_scales)
from ..export.integer import IntegerNQE, IntegerPatchEncoder, IntHead, IntLayer
from ..models.nqe import NQE, LayerSpec, NQEConfig, layer_offset_bits, layer_shift_bits
from ..quant.weight import bits_per_code, code_range
from ..utils import atomic_write_bytes
from . import spec as S

__all__ = ["MbitError", "MbitFile", "Section", "is_mbit", "encode_mbit", "write_mbit", "read_mbit", "read_container", "inspect_mbit",
           "mbit_to_model", "iter_decoded_layers"]


class MbitError(ValueError):
    """A .mbit file is malformed, truncated, corrupted or of an unsupported version."""


@dataclass
class Section:
    tag: int
    coder: int
    index: int
    payload: bytes

    @property
    def nbytes(self) -> int:
        return S.MBIT_SECTION.size + len(self.payload)


@dataclass
class MbitFile:
    version: int
    sections: list[Section]
    kind: str
    config: NQEConfig  # patch encoder: the NQE settings of its conv blocks (codec_config.nqe_config())
    meta: dict = field(default_factory=dict)
    size: int = 0
    codec_config: object | None = None  # PatchCodecConfig for kind "patch-encoder"


def is_mbit(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file that starts with the .mbit magic (sniffing before choosing a loader)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == S.MBIT_MAGIC
    except OSError:
        return False


# --- encoding ----------------------------------------------------------------------------
def _signed_field(values: np.ndarray, bits: int) -> bytes:
    w = _BitWriter()
    w.write(values, bits, signed=True)
    return pack_bits(w.bits())


def _code_weights(codes: np.ndarray, levels: int, coder: str, table_log: int | None, n_streams: int) -> tuple[bytes, bytes]:
    """(table bytes, payload) for one weight tensor."""
    idx = _codes_to_index(codes, levels)
    if coder == "raw":
        w = _BitWriter()
        w.write(idx, bits_per_code(levels))
        return b"", pack_bits(w.bits())
    from ..entropy import encode_array, freqs_to_bytes

    payload, freqs = encode_array(idx.astype(np.int64), coder=coder, table_log=table_log, n_streams=n_streams)
    return freqs_to_bytes(freqs), payload


def _code_section_weights(codes: np.ndarray, levels: int, coder: str, table_log: int | None,
                          n_streams: int, raw_fallback: bool = True) -> tuple[int, bytes, bytes]:
    """(coder id, table, payload) of one section: ``coder``'s, or raw where raw is strictly smaller
    (``raw_fallback``).

    [I] A section records its own coder, so an entropy-coded file never stores a tensor larger than
    its bit-packed form: a small tensor on a wide grid (an 8-bit first layer: 1,728 weights, a 255-entry
    frequency table) packs smaller raw. Readers and the C export decode each section by its own coder.
    """
    table, payload = _code_weights(codes, levels, coder, table_log, n_streams)
    if raw_fallback and coder != "raw" and (codes.size * bits_per_code(levels) + 7) // 8 < len(table) + len(payload):
        table, payload = _code_weights(codes, levels, "raw", None, 1)
        coder = "raw"
    return S.CODERS[coder], table, payload


def _scale_fields(cfg: NQEConfig | None, out: int, spec: LayerSpec | None = None) -> tuple[int, int, int]:
    """(n, shift_bits, mantissa_bits) of the BSN scales stored after the offsets; n = 0: none (the paper's BSN).
    ``spec``: the conv block, whose own shift width (``LayerSpec.shift_bits``) wins over the config's."""
    if cfg is None or (cfg.bsn_granularity == "layer" and not cfg.bsn_mantissa_bits):
        return 0, 0, 0
    return bsn_scale_count(cfg, out), layer_shift_bits(cfg, spec), cfg.bsn_mantissa_bits


def _norm_field_bits(cfg: NQEConfig | None, out: int, obits: int, spec: LayerSpec | None = None) -> int:
    n, sb, mb = _scale_fields(cfg, out, spec)
    return out * obits + n * (sb + mb)


def _conv_section(tag: int, index: int, L: IntLayer, offset_bits: int, coder: str,
                  table_log: int | None, n_streams: int, cfg: NQEConfig | None = None,
                  raw_fallback: bool = True) -> Section:
    cid, table, payload = _code_section_weights(L.codes, L.levels, coder, table_log, n_streams, raw_fallback)
    n, sb, mb = _scale_fields(cfg, len(L.offsets), None if cfg is None else cfg.layers[index])
    fixed = S.MBIT_CONV.pack(L.levels, 0 if n > 1 else int(L.shift), offset_bits, L.groups, L.codes.size,
                             len(L.offsets), len(table))
    w = _BitWriter()
    w.write(L.offsets, offset_bits, signed=True)
    if n:
        write_scales(w, L, n, sb, mb)
    return Section(tag, cid, index, fixed + pack_bits(w.bits()) + table + payload)


def encode_mbit(net: IntegerNQE | IntegerPatchEncoder, coder: str = "tans", table_log: int | None = None,
                n_streams: int = 1, meta: dict | None = None, raw_fallback: bool = True) -> bytes:
    """Serialize an integer network (classifier or patch encoder) to .mbit bytes.

    ``raw_fallback``: a section whose ``coder`` form (table + streams) is larger than its bit-packed weights
    is written raw (each section records its coder); ``False`` keeps ``coder`` everywhere."""
    if coder not in S.CODERS:
        raise ValueError(f"coder must be one of {', '.join(S.CODERS)}, got {coder!r}")
    if isinstance(net, IntegerPatchEncoder):
        cfg = net.cfg.nqe_config()
        head = {"kind": "patch-encoder", "config": cfg.to_dict(), "codec_config": net.cfg.to_dict(), "meta": meta or {}}
    else:
        cfg = net.cfg
        head = {"kind": "nqe-classifier", "config": cfg.to_dict(), "meta": meta or {}}
    secs = [Section(S.SECTION_CONFIG, S.CODER_NONE, 0, json.dumps(head, sort_keys=True).encode())]
    for i, L in enumerate(net.layers):
        secs.append(_conv_section(S.SECTION_CONV, i, L, layer_offset_bits(cfg, cfg.layers[i]), coder, table_log,
                                  n_streams, cfg, raw_fallback))
    if isinstance(net, IntegerPatchEncoder):
        secs.append(_conv_section(S.SECTION_CODE, 0, net.code, cfg.offset_bits, coder, table_log, n_streams,
                                  raw_fallback=raw_fallback))
    else:
        H = net.head
        hid, table, payload = _code_section_weights(H.codes, H.levels, coder, table_log, n_streams, raw_fallback)
        fixed = S.MBIT_HEAD.pack(H.levels, cfg.head_bias_bits, H.codes.shape[0], H.codes.shape[1], len(table))
        secs.append(Section(S.SECTION_HEAD, hid, 0, fixed + _signed_field(H.bias, cfg.head_bias_bits) + table + payload))
    return _container(secs)


def _container(secs: list[Section], flags: int = 0) -> bytes:
    """File header + sections, current version (section CRC over its 8 header bytes + payload)."""
    head12 = S.MBIT_HEADER.pack(S.MBIT_MAGIC, S.MBIT_VERSION, flags, len(secs), 0)[:12]
    out = bytearray(head12 + (zlib.crc32(head12) & 0xFFFFFFFF).to_bytes(4, "little"))
    for s in secs:
        head8 = S.MBIT_SECTION.pack(s.tag, s.coder, s.index, len(s.payload), 0)[:8]
        out += head8 + (zlib.crc32(s.payload, zlib.crc32(head8)) & 0xFFFFFFFF).to_bytes(4, "little")
        out += s.payload
    return bytes(out)


def write_mbit(net: IntegerNQE | IntegerPatchEncoder, path: str | os.PathLike, **kw) -> int:
    """Encode and write atomically; returns the file size in bytes."""
    data = encode_mbit(net, **kw)
    atomic_write_bytes(path, data)
    return len(data)


def coded_size_estimate(cfg: NQEConfig, coder: str = "tans", seed: int = 0, calib: int = 64) -> dict:
    """Size of a ``.mbit`` of a *preset* before any training: a seeded random model of ``cfg`` is
    calibrated (its HEQ steps set from its own weights), converted to BSN, packed with ``coder`` and
    measured, every byte counted.

    [I] Why this predicts a trained model's file: the histogram-equalized step makes every level
    about equally frequent whatever the weight distribution, so the coded bits per weight are
    ~log2(levels) before and after training (``nqe-1mbit``: 929,352 estimated vs 925,456 bits for the
    bundled trained file, +0.42 %; session 4's: 929,568 vs 928,904). It does not hold for step rules that keep a bell-shaped histogram
    (``absmax``): those code smaller after training, so the estimate is then an upper bound only.
    """
    import torch

    if not cfg.quantize:
        raise ValueError(f"{cfg.name or 'model'}: a float model has no coded size")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = NQE(cfg.with_(norm="bn")).train()
        with torch.no_grad():
            m(torch.rand(calib, cfg.in_channels, 32, 32, generator=g))
    m.eval().convert_to_bsn()
    data = encode_mbit(IntegerNQE.from_model(m), coder=coder)
    ins = inspect_mbit(read_mbit(data))
    return {"coder": coder, "file_bytes": len(data), "total_bits": 8 * len(data), "bits_per_weight": ins["bits_per_weight"],
            "fits": 8 * len(data) <= MBIT,
            "estimate": "random HEQ-calibrated model of the preset, packed and measured"}


# --- decoding ----------------------------------------------------------------------------
def upgrade_mbit(data: bytes) -> bytes:
    """A version-1 .mbit file rewritten as version 2: same sections and payloads byte for byte, only the
    version field and the CRCs change (v2's section CRC also covers the section header). Verified first."""
    f = read_mbit(data)
    if f.version == S.MBIT_VERSION:
        return bytes(data)
    return _container(f.sections, flags=S.MBIT_HEADER.unpack_from(data, 0)[2])


def read_container(src: str | os.PathLike | bytes) -> tuple[int, list[Section], dict, int]:
    """Verify a .mbit container (magic, version, lengths, every CRC) and parse its config JSON.
    Returns (version, sections, config object, file size); the model kind is ``obj["kind"]``."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        try:
            data = Path(src).read_bytes()
        except FileNotFoundError:
            raise MbitError(f"{src}: no such file") from None
        except IsADirectoryError:
            raise MbitError(f"{src}: is a directory") from None
    if len(data) < S.MBIT_HEADER.size:
        raise MbitError("not a .mbit file (too short for a header)")
    magic, version, flags, n_sec, crc = S.MBIT_HEADER.unpack_from(data, 0)
    if magic != S.MBIT_MAGIC:
        raise MbitError(f"not a .mbit file (magic {magic!r})")
    if zlib.crc32(data[:12]) & 0xFFFFFFFF != crc:
        raise MbitError("corrupted .mbit header (CRC mismatch)")
    if version not in S.MBIT_READ_VERSIONS:
        raise MbitError(f"unsupported .mbit version {version} (this megabit reads versions "
                        f"{', '.join(map(str, S.MBIT_READ_VERSIONS))})")
    if not 2 <= n_sec <= S.MAX_SECTIONS:
        raise MbitError(f"corrupted .mbit header ({n_sec} sections)")
    pos, secs = S.MBIT_HEADER.size, []
    for k in range(n_sec):
        if pos + S.MBIT_SECTION.size > len(data):
            raise MbitError(f"truncated .mbit file (section {k} header missing)")
        tag, coder, index, length, scrc = S.MBIT_SECTION.unpack_from(data, pos)
        head8 = data[pos : pos + 8]
        pos += S.MBIT_SECTION.size
        if pos + length > len(data):
            raise MbitError(f"truncated .mbit file (section {k} needs {length} bytes)")
        payload = data[pos : pos + length]
        pos += length
        seed = 0 if version == 1 else zlib.crc32(head8)
        if zlib.crc32(payload, seed) & 0xFFFFFFFF != scrc:
            raise MbitError(f"corrupted .mbit file (CRC mismatch in section {k})")
        if tag not in S.SECTION_NAMES or coder not in S.CODER_NAMES:
            raise MbitError(f"unknown section tag {tag} / coder {coder} in section {k}")
        secs.append(Section(tag, coder, index, payload))
    if pos != len(data):
        raise MbitError(f"{len(data) - pos} trailing bytes after the last section")
    if secs[0].tag != S.SECTION_CONFIG:
        raise MbitError("first section is not the config")
    try:
        obj = json.loads(secs[0].payload.decode())
        if not isinstance(obj, dict) or obj.get("kind") not in S.KINDS:
            raise ValueError(f"unsupported model kind {obj.get('kind') if isinstance(obj, dict) else None!r}")
    except Exception as e:  # noqa: BLE001 - any malformed JSON is a format error
        raise MbitError(f"bad config section ({type(e).__name__}: {str(e)[:80]})") from None
    return version, secs, obj, len(data)


def read_mbit(src: str | os.PathLike | bytes) -> MbitFile:
    """Parse and verify a NQE classifier / patch-encoder .mbit file (no weight decoding yet).
    A ResNet file (kind ``"resnet"``) is read by :func:`megabit.fmt.mbit_resnet.read_resnet_mbit`."""
    version, secs, obj, size = read_container(src)
    if obj["kind"] == "resnet":
        raise MbitError("this .mbit holds a ResNet (megabit.fmt.mbit_resnet.read_resnet_mbit reads it)")
    if obj["kind"] == "lic":
        raise MbitError("this .mbit holds a quantized image codec (megabit.fmt.mbit_lic.read_lic_mbit reads it)")
    try:
        cfg = NQEConfig.from_dict(obj["config"])
        kind, meta = obj["kind"], obj.get("meta", {})
        ccfg = None
        if kind == "patch-encoder":
            from ..models.patch_codec import PatchCodecConfig

            ccfg = PatchCodecConfig.from_dict(obj["codec_config"])
            if ccfg.nqe_config() != cfg:
                raise ValueError("codec_config and config disagree")
    except Exception as e:  # noqa: BLE001 - any malformed JSON/config is a format error
        raise MbitError(f"bad config section ({type(e).__name__}: {str(e)[:80]})") from None
    tail_tag = S.SECTION_CODE if kind == "patch-encoder" else S.SECTION_HEAD
    n = len(cfg.layers)
    if ([s.tag for s in secs[1:]] != [S.SECTION_CONV] * n + [tail_tag]
            or [s.index for s in secs[1 : n + 1]] != list(range(n)) or secs[-1].index != 0):
        raise MbitError("sections do not match the model config")
    return MbitFile(version, secs, kind, cfg, meta, size, ccfg)


def _decode_weights(coder: int, levels: int, n: int, table: bytes, payload: bytes) -> np.ndarray:
    if coder == S.CODER_RAW:
        b = bits_per_code(levels)
        if len(payload) != (n * b + 7) // 8:
            raise MbitError("raw weight payload has the wrong length")
        idx = _BitReader(unpack_bits(payload, n * b)).read(n, b)
    elif coder in (S.CODER_TANS, S.CODER_RANS):
        from ..entropy import decode_array, freqs_from_bytes

        freqs, end = freqs_from_bytes(table)
        if end != len(table) or len(freqs) > levels:
            raise MbitError("bad frequency table")
        idx = decode_array(payload, freqs, n_symbols=n, coder=S.CODER_NAMES[coder])
    else:
        raise MbitError(f"section has no weight coder ({coder})")
    cr = np.asarray(code_range(levels))
    if idx.size != n or (n and int(idx.max()) >= len(cr)):
        raise MbitError("decoded weights fall outside the level grid")
    return cr[idx].astype(np.int8 if int(np.abs(cr).max()) <= 127 else np.int16)


def check_tensor_sections(secs: list[Section], order: list[tuple[str, bool]], state_dict: dict) -> None:
    """Kinds "resnet" and "lic": the sections after the config must be one qtensor / float section per
    stored tensor of ``order`` ((state_dict key, quantized?), in file order), float ones of the right size."""
    want = [(S.SECTION_QTENSOR if q else S.SECTION_FLOAT, i) for i, (_, q) in enumerate(order)]
    if [(s.tag, s.index) for s in secs[1:]] != want:
        raise MbitError("sections do not match the model config")
    for sec, (key, q) in zip(secs[1:], order):
        if not q and (sec.coder != S.CODER_NONE or len(sec.payload) != 4 * state_dict[key].numel()):
            raise MbitError(f"float section {sec.index} ({key}) has the wrong size")


def read_qtensor(sec: Section, levels: int, n: int, n_steps: int, what: str = "config"):
    """Parse a qtensor section (kinds "resnet", "lic") expected to hold ``n`` weights of ``levels``
    levels and ``n_steps`` steps: (flat codes, float32 steps, table bytes, offset of the table)."""
    if len(sec.payload) < S.MBIT_QTENSOR.size:
        raise MbitError(f"qtensor section {sec.index} too short")
    lv, ns, nw, tb = S.MBIT_QTENSOR.unpack_from(sec.payload, 0)
    if (lv, nw, ns) != (levels, n, n_steps):
        raise MbitError(f"qtensor section {sec.index} does not match the {what}")
    a = S.MBIT_QTENSOR.size
    b = a + 4 * n_steps
    if b + tb > len(sec.payload):
        raise MbitError(f"qtensor section {sec.index} shorter than its declared fields")
    steps = np.frombuffer(sec.payload[a:b], dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(steps)) or np.any(steps <= 0):
        raise MbitError(f"qtensor section {sec.index}: steps must be finite and positive")
    try:
        codes = _decode_weights(sec.coder, levels, n, sec.payload[b : b + tb], sec.payload[b + tb :])
    except MbitError as e:
        raise MbitError(f"qtensor section {sec.index}: {e}") from None
    except ValueError as e:
        raise MbitError(f"qtensor section {sec.index}: {str(e).splitlines()[0]}") from None
    return codes, steps, tb, b


def _split(payload: bytes, fixed_size: int, nfield: int, field_bits: int, table_bytes: int):
    a = fixed_size
    b = a + (nfield * field_bits + 7) // 8
    c = b + table_bytes
    if c > len(payload):
        raise MbitError("section shorter than its declared fields")
    return payload[a:b], payload[b:c], payload[c:]


def decode_conv(sec: Section, cfg: NQEConfig, cin: int, codec_config=None) -> IntLayer:
    """A CONV section, or (``sec.tag == SECTION_CODE``, with the file's ``codec_config``) the code layer."""
    if len(sec.payload) < S.MBIT_CONV.size:
        raise MbitError("conv section too short")
    levels, shift, obits, groups, n, out, tb = S.MBIT_CONV.unpack_from(sec.payload, 0)
    if sec.tag == S.SECTION_CODE:
        if codec_config is None:
            raise MbitError("code section without a patch codec config")
        L = LayerSpec(codec_config.code_channels, levels=codec_config.code_levels, kernel=1)
        want_obits = cfg.offset_bits
    else:
        L = cfg.layers[sec.index]
        want_obits = layer_offset_bits(cfg, L)
    k = L.kernel
    if (levels, groups, out, obits) != (L.levels, L.groups, L.out, want_obits) or n != out * (cin // groups) * k * k:
        raise MbitError(f"{S.SECTION_NAMES[sec.tag]} section {sec.index} does not match the config")
    cfg_scales = None if sec.tag == S.SECTION_CODE else cfg
    nbits = _norm_field_bits(cfg_scales, out, obits, L)
    offb, table, payload = _split(sec.payload, S.MBIT_CONV.size, 1, nbits, tb)
    r = _BitReader(unpack_bits(offb, nbits))
    offsets = r.read(out, obits, signed=True)
    ns, sb, mb = _scale_fields(cfg_scales, out, L)
    mant = 0
    if ns:
        shift, mant = read_scales(r, ns, sb, mb)
    try:
        codes = _decode_weights(sec.coder, levels, n, table, payload)
    except MbitError:
        raise
    except ValueError as e:
        raise MbitError(f"conv section {sec.index}: {str(e).splitlines()[0]}") from None
    return IntLayer(codes.reshape(out, cin // groups, k, k), levels, groups, L.pool, shift, offsets, mant,
                    0 if cfg_scales is None else cfg_scales.bsn_mantissa_bits)


def decode_head(sec: Section, cfg: NQEConfig, cin: int) -> IntHead:
    if len(sec.payload) < S.MBIT_HEAD.size:
        raise MbitError("head section too short")
    levels, bbits, classes, nin, tb = S.MBIT_HEAD.unpack_from(sec.payload, 0)
    if (levels, bbits, classes, nin) != (cfg.head_levels, cfg.head_bias_bits, cfg.num_classes, cin):
        raise MbitError("head section does not match the config")
    bb, table, payload = _split(sec.payload, S.MBIT_HEAD.size, classes, bbits, tb)
    bias = _BitReader(unpack_bits(bb, classes * bbits)).read(classes, bbits, signed=True)
    try:
        codes = _decode_weights(sec.coder, levels, classes * nin, table, payload)
    except MbitError:
        raise
    except ValueError as e:
        raise MbitError(f"head section: {str(e).splitlines()[0]}") from None
    return IntHead(codes.reshape(classes, nin), levels, bias)


def iter_decoded_layers(f: MbitFile):
    """Yield decoded layers one at a time (decode-at-inference: only one layer in memory)."""
    cin = f.config.in_channels
    for s in f.sections:
        if s.tag in (S.SECTION_CONV, S.SECTION_CODE):
            L = decode_conv(s, f.config, cin, f.codec_config)
            cin = L.codes.shape[0]
            yield L
        elif s.tag == S.SECTION_HEAD:
            yield decode_head(s, f.config, cin)


def mbit_to_integer(f: MbitFile) -> IntegerNQE | IntegerPatchEncoder:
    """The integer network of a file: :class:`IntegerNQE` or :class:`IntegerPatchEncoder`."""
    items = list(iter_decoded_layers(f))
    if f.kind == "patch-encoder":
        return IntegerPatchEncoder(f.codec_config, items[:-1], items[-1])
    return IntegerNQE(f.config, items[:-1], items[-1])


def mbit_to_model(f: MbitFile | str | os.PathLike | bytes) -> NQE:
    """A runnable fake-quant PyTorch classifier whose integer codes are exactly the file's."""
    if not isinstance(f, MbitFile):
        f = read_mbit(f)
    if f.kind != "nqe-classifier":
        raise MbitError(f"this .mbit holds a {f.kind}, not a classifier (load it with mbit_to_integer)")
    return integer_to_model(mbit_to_integer(f))


def integer_to_model(net: IntegerNQE) -> NQE:
    """Rebuild an NQE (BSN mode, eval) from integer parameters (latent weights = exact codes)."""
    import torch

    model = NQE(net.cfg.with_(norm="bsn"))
    with torch.no_grad():
        for blk, L in zip(model.blocks, net.layers):
            c = torch.from_numpy(L.codes.astype(np.float32))
            blk.weight.copy_(c if L.levels % 2 else c / 2)
            blk.quant.step.fill_(1.0)
            blk.quant.initialized.fill_(True)
            blk.norm.set_scale(L.shift, L.mant)
            blk.norm.offset.copy_((torch.from_numpy(L.offsets.astype(np.float64))
                                   * torch.exp2(-blk.norm.total_shift().double())).float())
        h = model.head
        c = torch.from_numpy(net.head.codes.astype(np.float32))
        h.weight.copy_(c if net.head.levels % 2 else c / 2)
        h.quant.step.fill_(1.0)
        h.quant.initialized.fill_(True)
        h.log_alpha.fill_(0.0)  # alpha = 1: the bias parameter is then the integer bias itself
        h.bias.copy_(torch.from_numpy(net.head.bias.astype(np.float32)))
    return model.eval()


def inspect_mbit(f: MbitFile) -> dict:
    """Per-layer accounting in which every byte of the file is counted once."""
    from ..entropy import entropy_bits

    rows, cin, total_w, coded_w_bits = [], f.config.in_channels, 0, 0
    fixed_bytes = S.MBIT_HEADER.size + f.sections[0].nbytes
    for s in f.sections[1:]:
        if s.tag in (S.SECTION_CONV, S.SECTION_CODE):
            L = decode_conv(s, f.config, cin, f.codec_config)
            name = f"blocks.{s.index}" if s.tag == S.SECTION_CONV else "code"
            codes, levels = L.codes, L.levels
            fixed = S.MBIT_CONV.size
            _, _, obits, _, _, out, tb = S.MBIT_CONV.unpack_from(s.payload, 0)
            conv = s.tag == S.SECTION_CONV
            norm_bytes = (_norm_field_bits(f.config if conv else None, out, obits,
                                           f.config.layers[s.index] if conv else None) + 7) // 8
            cin = L.codes.shape[0]
        else:
            H = decode_head(s, f.config, cin)
            name, codes, levels = "head", H.codes, H.levels
            fixed = S.MBIT_HEAD.size
            _, bbits, classes, _, tb = S.MBIT_HEAD.unpack_from(s.payload, 0)
            norm_bytes = (classes * bbits + 7) // 8
        weight_bytes = len(s.payload) - fixed - norm_bytes - tb
        n = codes.size
        idx = _codes_to_index(codes, levels)
        h = entropy_bits(np.bincount(idx, minlength=levels))
        rows.append({"name": name, "coder": S.CODER_NAMES[s.coder], "weights": n, "levels": levels,
                     "entropy_bits_per_weight": h / n if n else 0.0, "coded_bits": 8 * weight_bytes,
                     "bits_per_weight": 8 * weight_bytes / n if n else 0.0, "table_bytes": tb,
                     "norm_bytes": norm_bytes, "overhead_bytes": S.MBIT_SECTION.size + fixed,
                     "section_bytes": s.nbytes})
        total_w += n
        coded_w_bits += 8 * weight_bytes
    total = fixed_bytes + sum(r["section_bytes"] for r in rows)
    assert total == f.size, "accounting must cover every byte"
    return {"layers": rows, "n_weights": total_w, "weight_bits": coded_w_bits,
            "bits_per_weight": coded_w_bits / total_w if total_w else 0.0,
            "table_bytes": sum(r["table_bytes"] for r in rows), "norm_bytes": sum(r["norm_bytes"] for r in rows),
            "header_bytes": fixed_bytes + sum(r["overhead_bytes"] for r in rows),
            "file_bytes": f.size, "total_bits": 8 * f.size, "limit_bits": 1 << 20, "fits": 8 * f.size <= (1 << 20),
            "model": f.config.name, "kind": f.kind, "meta": f.meta}
