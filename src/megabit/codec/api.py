"""Compress / decompress images with the patch codec (library API behind ``megabit compress``).

>>> import numpy as np
>>> from megabit.models.patch_codec import PatchCodec, PatchCodecConfig
>>> c = Codec.from_model(PatchCodec(PatchCodecConfig.tiny()).eval(), name="codec-tiny")
>>> img = np.random.default_rng(0).integers(0, 256, (37, 70, 3), dtype=np.uint8)
>>> data = compress_image(img, c, rate_bits=64)
>>> decompress_bytes(data, c).shape
(37, 70, 3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import load_rgb, pad_to_multiple
from ..fmt.mbc import MbcHeader, pack_bits, pack_levels, pack_mbc, unpack_bits, unpack_levels, unpack_mbc
from ..models.patch_codec import PATCH, PatchCodec, PatchCodecConfig
from ..utils import atomic_write_bytes
from . import context_model as cmod
from . import entropy_model as em
from .search import SearchConfig, search_bits
from .registry import CUSTOM_MODEL_ID, DEFAULT_MODEL, MODELS, asset_path, model_id_of

__all__ = ["Codec", "load_codec", "find_codec", "compress_image", "coded_files", "SearchConfig", "decompress_bytes", "reconstruct", "compress_file",
           "decompress_file", "ENTROPY_MODES"]

ENTROPY_MODES = ("auto", "raw", "ans", "ctx")


@dataclass
class Codec:
    """A loaded model plus what the bitstream needs to name it."""

    model: PatchCodec
    name: str
    model_id: int
    model_hash: bytes
    bit_probs: np.ndarray  # [max_bits, 6] float32
    #: optional second stage v2 (payloads name it by its own digest, so it is not in model_hash)
    ctx: cmod.ContextModel | None = None
    #: other context models the decoder knows (payloads are matched by digest), by name
    ctx_alt: dict = dataclasses.field(default_factory=dict)

    def select_ctx(self, name: str) -> "Codec":
        """The same codec whose encoder-side context model is the alternative ``name`` (e.g.
        ``"linear"``, the one small enough for the device; its files decode with either)."""
        if name not in self.ctx_alt:
            raise ValueError(f"model {self.name} has no context model {name!r}; it has: "
                             f"{', '.join(self.ctx_alt) or 'none besides the default'}")
        alt = {**self.ctx_alt, "default": self.ctx} if self.ctx is not None else dict(self.ctx_alt)
        return dataclasses.replace(self, ctx=self.ctx_alt[name], ctx_alt={k: v for k, v in alt.items() if k != name})

    @classmethod
    def from_model(cls, model: PatchCodec, name: str = "custom", bit_probs: np.ndarray | None = None,
                   model_id: int | None = None, ctx: cmod.ContextModel | None = None) -> "Codec":
        model.eval()
        if bit_probs is None:
            bit_probs = np.full((model.cfg.max_bits, em.N_CTX), 0.5, np.float32)
        bit_probs = np.asarray(bit_probs, np.float32)
        if ctx is not None and ctx.channels != model.cfg.code_channels:
            raise ValueError(f"context model has {ctx.channels} channels, the codec {model.cfg.code_channels}")
        return cls(model, name, model_id_of(name) if model_id is None else model_id, model_hash(model, bit_probs),
                   bit_probs, ctx)


def model_hash(model: PatchCodec, bit_probs: np.ndarray) -> bytes:
    """sha256 over the encoder's tensors (sorted names, float32 LE) and the bit table; first 8 bytes."""
    h = hashlib.sha256()
    for k, v in sorted(model.g_a.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    h.update(np.asarray(bit_probs, "<f4").tobytes())
    return h.digest()[:8]


def load_codec(model: str | os.PathLike | None = None) -> Codec:
    """Load a bundled model by name (default: ``registry.DEFAULT_MODEL``) or a model file (``model.pt``)."""
    name = DEFAULT_MODEL if model is None else str(model)
    is_file = Path(name).suffix == ".pt" or os.sep in name
    path = Path(name) if is_file else asset_path(name)
    if not path.is_file():
        raise ValueError(f"codec model file not found: {path}" + ("" if is_file else " (no trained model bundled)"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        cfg = PatchCodecConfig.from_dict(obj["config"])
        m = PatchCodec(cfg)
        m.load_state_dict(obj["state_dict"])
    except (KeyError, RuntimeError, TypeError, EOFError) as e:
        raise ValueError(f"not a patch codec model file: {path} ({type(e).__name__})") from None
    probs = obj.get("bit_probs")
    probs = None if probs is None else np.asarray(probs, np.float32)
    # the context model: inside the model file ("ctx_model", bytes) or in a sidecar MODEL.ctx.npz
    ctx_bytes, side = obj.get("ctx_model"), path.with_suffix(".ctx.npz")
    if ctx_bytes is None and side.is_file():
        ctx_bytes = side.read_bytes()
    try:
        ctx = None if ctx_bytes is None else cmod.ContextModel.from_bytes(bytes(ctx_bytes))
    except ValueError as e:
        raise ValueError(f"{side if obj.get('ctx_model') is None else path}: {e}") from None
    alt = {}  # alternatives: inside the model file ("ctx_alt", name -> bytes) or sidecars MODEL.ctx-NAME.npz
    for k, v in (obj.get("ctx_alt") or {}).items():
        try:
            alt[str(k)] = cmod.ContextModel.from_bytes(bytes(v))
        except ValueError as e:
            raise ValueError(f"{path}: context model {k!r}: {e}") from None
    for f in sorted(path.parent.glob(path.stem + ".ctx-*.npz")):
        try:
            alt[f.name[len(path.stem) + 5 : -4]] = cmod.ContextModel.from_bytes(f.read_bytes())
        except ValueError as e:
            raise ValueError(f"{f}: {e}") from None
    c = Codec.from_model(m, path.stem if is_file else name, probs, CUSTOM_MODEL_ID if is_file else model_id_of(name),
                         ctx)
    c.ctx_alt = alt
    return c


def find_codec(spec: str) -> Codec | None:
    """The patch codec named by ``spec`` (bundled name, codec model.pt or its run folder), else None:
    lets CLIs that take any model (``pack``, ``budget``) tell a codec from a classifier."""
    if spec in {n for n, _ in MODELS.values()} and not Path(spec).exists():
        return load_codec(spec)
    p = Path(spec)
    if p.is_dir() and (p / "model.pt").is_file():
        p = p / "model.pt"
    if p.suffix == ".pt" and p.is_file():
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - not ours to judge here; the classifier loader reports it
            return None
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "enc_layers" in obj["config"]:
            return load_codec(str(p))
    return None


# ----------------------------------------------------------------------------- compress ---


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float()


def encode_bits_of(img: np.ndarray, codec: Codec, rate_bits: int,
                   search: SearchConfig | int | None = None, progress: bool = False) -> tuple[np.ndarray, int, int]:
    """uint8 [H, W, 3] -> (bits [gh*gw, rate], gh, gw), image padded by edge replication.

    ``search``: encoder-side code search steps (or a :class:`SearchConfig`); None/0 = the NQE
    encoder's code as is (see :mod:`megabit.codec.search`)."""
    codec.model.cfg.channels_for(rate_bits)
    x = _to_tensor(pad_to_multiple(img, PATCH))
    gh, gw = x.shape[2] // PATCH, x.shape[3] // PATCH
    bits = []
    rows_per_chunk = max(1, 256 // gw)  # bound memory on large images
    for r0 in range(0, gh, rows_per_chunk):
        xs = x[:, :, r0 * PATCH : (r0 + rows_per_chunk) * PATCH]
        bits.append(codec.model.compress(xs, rate_bits).numpy())
    bits = np.concatenate(bits, 0)
    if search:
        bits = search_bits(codec, x, bits, rate_bits, search, progress)
    return bits, gh, gw


def compress_image(img, codec: Codec, rate_bits: int = 256, entropy: str = "auto",
                   search: SearchConfig | int | None = None, progress: bool = False, bpp: float | None = None) -> bytes:
    """Image (path, PIL image or uint8 [H, W, 3|1|4] array) -> .mbc bytes.

    ``entropy``: "raw" = fixed rate (packed bits), "ans" = rANS with the model's bit table,
    "ctx" = rANS with the model's causal context model, "auto" = the smallest of those the model has. ``search``: encoder-side code search steps (0/None = off;
    the file format and the decoder are the same either way). ``bpp``: adaptive rate instead of
    ``rate_bits``: a rate per patch, chosen so the file has at most this many bits per pixel
    (:mod:`megabit.codec.ratecontrol`; with ``search``, each rate's code is searched on its own).
    """
    if entropy not in ENTROPY_MODES:
        raise ValueError(f"entropy must be one of {ENTROPY_MODES}, got {entropy!r}")
    channels = 3
    if isinstance(img, np.ndarray):
        a = img
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxW[xC] image, got {a.dtype} {a.shape}")
        channels = a.shape[2]
        a = np.repeat(a[:, :, :1], 3, 2) if channels <= 2 else a[:, :, :3]
    else:
        from PIL import Image

        im = img if isinstance(img, Image.Image) else None
        if im is None:
            a = load_rgb(img)
            try:
                with Image.open(img) as probe:
                    channels = len(probe.getbands())
            except Exception:  # noqa: BLE001 - the channel count is informational only
                channels = 3
        else:
            a, channels = load_rgb(im), len(im.getbands())
    channels = min(max(channels, 1), 4)
    h, w = a.shape[:2]
    if bpp is not None:
        from .ratecontrol import compress_adaptive

        return compress_adaptive(np.ascontiguousarray(a), codec, bpp, channels, entropy, search, progress)
    bits, gh, gw = encode_bits_of(np.ascontiguousarray(a), codec, rate_bits, search, progress)
    files = coded_files(bits, gh, gw, codec, w, h, channels, rate_bits, entropy)
    return min(files.values(), key=len)


def coded_files(bits: np.ndarray, gh: int, gw: int, codec: Codec, width: int, height: int, channels: int,
                rate_bits: int, entropy: str = "auto", patch_rates: np.ndarray | None = None) -> dict[str, bytes]:
    """Complete .mbc files of the same code bits, one per payload coding that ``entropy`` allows:
    ``{"raw"|"ans"|"ctx": bytes}`` ("auto": every coding the model has).

    ``patch_rates`` ([P], each one of the model's rates, max = ``rate_bits``): an adaptive-rate
    file; its payload is the rate map, then each patch's first ``patch_rates[p]`` bits (raw) or the
    context-coded map of those bits (no bit-table coding)."""
    if entropy == "ctx" and codec.ctx is None:
        raise ValueError(f"model {codec.name} has no context model (entropy 'ctx'); use auto, ans or raw")
    head = b""
    if patch_rates is not None:
        rates = sorted(codec.model.cfg.rates)
        pr = np.asarray(patch_rates, np.int64).reshape(-1)
        if pr.size != gh * gw or not np.isin(pr, rates).all() or pr.max() != rate_bits:
            raise ValueError(f"patch rates must be {gh * gw} of the model's rates {rates}, the largest = {rate_bits}")
        if entropy == "ans":
            raise ValueError("an adaptive-rate file is coded raw or with the context model, not with the bit table")
        head = pack_levels(np.searchsorted(rates, pr))
    payloads = {}
    if entropy in ("raw", "auto"):
        payloads["raw"] = pack_bits(bits) if patch_rates is None else pack_bits(bits[np.arange(rate_bits)[None] < pr[:, None]])
    if entropy in ("ans", "auto") and patch_rates is None:
        payloads["ans"] = em.encode_bits(bits, gh, gw, codec.bit_probs)
    if entropy in ("ctx", "auto") and codec.ctx is not None:
        payloads["ctx"] = cmod.encode(bits, gh, gw, codec.ctx, patch_rates)
    return {k: pack_mbc(MbcHeader(width, height, channels, rate_bits, codec.model_id, codec.model_hash,
                                  entropy_coded=k == "ans", ctx_coded=k == "ctx", adaptive=patch_rates is not None),
                        head + p) for k, p in payloads.items()}


# --------------------------------------------------------------------------- decompress ---


def _refine_tiled(model: PatchCodec, x: torch.Tensor, rate_frac: float, tile: int = 512, margin: int = 64) -> torch.Tensor:
    """Refinement on overlapping tiles (origins on the 32-pixel grid, so the position code agrees)."""
    _, _, H, W = x.shape
    if H * W <= 1024 * 1024:
        return model.refine(x, rate_frac)
    out = torch.empty_like(x)
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            yb, xb = min(H, y0 + tile + margin), min(W, x0 + tile + margin)
            r = model.refine(x[:, :, ya:yb, xa:xb], rate_frac)
            out[:, :, y0 : min(H, y0 + tile), x0 : min(W, x0 + tile)] = r[:, :, y0 - ya : y0 - ya + min(tile, H - y0),
                                                                          x0 - xa : x0 - xa + min(tile, W - x0)]
    return out


@torch.no_grad()
def reconstruct(bits: np.ndarray, gh: int, gw: int, rate_bits: int, codec: Codec, refine: bool = True,
                patch_rates: np.ndarray | None = None) -> torch.Tensor:
    """Code bits -> float image [1, 3, 32gh, 32gw] on 0..255 (PURENET: g_s per patch, tile, refine).

    ``patch_rates``: an adaptive file's rate per patch (``rate_bits`` is then their largest): g_s
    gets each patch's own channels, the refinement the mean rate. [I] measured on 8 held-out
    training photos at the 256-bit size: a per-patch rate map (the refinement only saw constant
    ones in training) gave 24.590 dB / blockiness 2.68, the mean rate 24.594 dB / 2.50."""
    from ..models.patch_codec import unpatchify

    m = codec.model
    codes = m.codes_from_bits(torch.from_numpy(np.ascontiguousarray(bits)), rate_bits)
    r = rate_bits if patch_rates is None else torch.as_tensor(np.asarray(patch_rates, np.int64))
    patches = m.decode_patches(codes, r, (1, gh, gw), chunk=512)
    x = unpatchify(patches, 1, gh, gw)
    if refine:
        frac = rate_bits / m.cfg.max_bits if patch_rates is None else float(r.double().mean()) / m.cfg.max_bits
        x = _refine_tiled(m, x, frac)
    return x * 255.0


def _check_model(h: MbcHeader, codec: Codec) -> None:
    if h.model_hash != codec.model_hash:
        want = MODELS.get(h.model_id, ("a custom model",))[0]
        raise ValueError(f"the .mbc file was made with {want} (hash {h.model_hash.hex()}), not with the loaded "
                         f"{codec.name} (hash {codec.model_hash.hex()})")


def decode_header_bits(data: bytes, codec: Codec) -> tuple[MbcHeader, np.ndarray, np.ndarray | None]:
    """.mbc bytes -> (header, code bits [P, rate], rate per patch of an adaptive file or None)."""
    h, payload = unpack_mbc(data)
    _check_model(h, codec)
    codec.model.cfg.channels_for(h.rate_bits)
    gw, gh = h.grid
    pr = None
    if h.adaptive:
        rates = sorted(codec.model.cfg.rates)
        lv = unpack_levels(payload[: h.level_map_bytes], h.n_patches)
        if lv.max() >= len(rates) or rates[int(lv.max())] != h.rate_bits:
            raise ValueError("corrupted .mbc: the rate map names rates the header or the model does not have")
        pr = np.asarray(rates, np.int64)[lv]
        payload = payload[h.level_map_bytes :]
    if h.ctx_coded:
        models = ([codec.ctx] if codec.ctx is not None else []) + list(codec.ctx_alt.values())
        if not models:
            raise ValueError(f"the .mbc file is context coded, but the loaded model {codec.name} has no context model")
        tag = bytes(payload[: cmod.DIGEST])
        cm = next((m for m in models if m.digest() == tag), models[0])  # no match: decode names the mismatch
        bits = cmod.decode(payload, gh, gw, h.rate_bits, cm, patch_rates=pr)
    elif h.entropy_coded:
        bits = em.decode_bits(payload, gh, gw, h.rate_bits, codec.bit_probs)
    elif pr is not None:
        keep = np.arange(h.rate_bits)[None] < pr[:, None]
        bits = np.zeros((h.n_patches, h.rate_bits), np.uint8)
        bits[keep] = unpack_bits(payload, 1, int(keep.sum()))[0]
    else:
        bits = unpack_bits(payload, h.n_patches, h.rate_bits)
    return h, bits, pr


def decompress_bytes(data: bytes, codec: Codec | None = None, refine: bool = True) -> np.ndarray:
    """.mbc bytes -> uint8 RGB [H, W, 3] with the source image's size. ``codec=None``: the bundled
    model named by the file's model id."""
    if codec is None:
        h, _ = unpack_mbc(data)
        if h.model_id not in MODELS:
            raise ValueError(f"the .mbc file needs a model file (model id {h.model_id}); pass --model")
        codec = load_codec(MODELS[h.model_id][0])
    h, bits, pr = decode_header_bits(data, codec)
    gw, gh = h.grid
    x = reconstruct(bits, gh, gw, h.rate_bits, codec, refine, pr)
    img = x[0, :, : h.height, : h.width].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return np.ascontiguousarray(img.numpy())


def compress_file(src: str | os.PathLike, dst: str | os.PathLike, codec: Codec, rate_bits: int = 256,
                  entropy: str = "auto", search: SearchConfig | int | None = None, progress: bool = False,
                  bpp: float | None = None) -> int:
    """Compress one image file to a .mbc file (atomic write). Returns the file size in bytes.
    ``progress``: a bar for the code search (if any). ``bpp``: adaptive rate (see :func:`compress_image`)."""
    data = compress_image(Path(src), codec, rate_bits, entropy, search, progress, bpp)
    atomic_write_bytes(dst, data)
    return len(data)


def decompress_file(src: str | os.PathLike, dst: str | os.PathLike, codec: Codec | None = None,
                    refine: bool = True, rgb: bool = False) -> tuple[int, int]:
    """Decompress a .mbc file to PNG (atomic write). Returns (width, height).

    A gray source (header channels 1 or 2) is written as an 8-bit gray PNG, the luma of the decoded
    RGB (ITU-R 601, Pillow's ``convert("L")``; the codec itself always works in RGB); ``rgb=True``
    writes RGB whatever the source. Alpha is never restored (it is not coded)."""
    import io

    from PIL import Image

    data = Path(src).read_bytes()
    img = decompress_bytes(data, codec, refine)
    out = Image.fromarray(img, "RGB")
    if not rgb and unpack_mbc(data)[0].channels <= 2:
        out = out.convert("L")
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    atomic_write_bytes(dst, buf.getvalue())
    return img.shape[1], img.shape[0]
