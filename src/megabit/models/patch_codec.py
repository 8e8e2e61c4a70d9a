"""Patch codec of arXiv 2501.05097: NQE patch encoder (edge) + PURENET full-frame decoder (server).

::

    edge (integer, <= 2^20 stored bits)                       server (float)
    ───────────────────────────────────                       ─────────────────────────────────────────
    image ─pad to 32k─► 32x32 patches                          codes ─► g_s: per-patch upsampling
      uint8−128 ─► [QConv 3b ─ BN/BSN ─ HWMSB ─ pool]            4x4xC ─conv─(PixelShuffle x2)x3─► 32x32x3
                ─► [QConv 2b ─ BN/BSN ─ HWMSB ─ pool]          ─► aggregation: patches tiled into the frame
                ─► [QConv 2b/g2 ─ BN/BSN ─ HWMSB ─ pool]       ─► refine: full-frame residual CNN,
                ─► [QConv 1b ─ BN/BSN ─ HWMSB]                    dilated convs at 1/2 resolution
                ─► g_a code layer: QConv1x1 2b ─ BSN ─ sign       (receptive field >> 32 px, crosses
                ─► 4x4x32 = 512 bits per patch                    patch boundaries) ─► x_hat

Why this structure
------------------
* **Encoder = NQE blocks** (:class:`megabit.models.nqe.QConvBlock` reused as is): integer input
  (pixel − 128), low-bit weights with the histogram-equalized step, 2-bit HWMSB activations and
  BatchNorm converted to layer-shared Bit-Shift Normalization, so the edge side is integer-only.
  The code layer is one more quantized conv whose output goes through ``sign`` (STE) instead of
  HWMSB: ``sign((acc + o_c) * 2^-k) = sign(acc + o_c)``, an integer comparison.
* **Spatial code, nested rates** ([I] our choice; the paper's code layout is not public): the code
  is a 4x4 grid of ``code_channels`` bits. Rate ``r`` bits/patch keeps the first ``r/16`` channels
  (128/256/512 bits = 0.125/0.25/0.5 bpp for 32x32 patches). One encoder and one decoder serve all
  three rates: training draws a rate per sample and zeroes the dropped channels (codes are ±1, so
  0 reads as "not sent"), which orders the channels by importance (nested dropout).
* **PURENET = per-patch decoder + aggregation + refinement** ([I] the paper gives the three parts,
  not their layers): ``g_s`` maps each code to a 32x32 patch independently (cheap, trained on
  patches in large batches). Independent patches show seams on the 32-pixel grid; the refinement
  module sees the tiled frame, works at half resolution (pixel-unshuffle: 4x cheaper, twice the
  receptive field per layer) with dilations 1,2,4,8,... so its receptive field spans several
  patches, and adds a residual. It also gets sin/cos of the position modulo 32 (a CNN is
  translation-equivariant and otherwise cannot know where the seams are) and the rate.

CompressAI contract: ``forward(x) -> {"x_hat", "likelihoods"}`` (fixed-rate binary code: the
likelihoods are those of a uniform code, 1/2 per bit), ``compress(x) -> codes``,
``decompress(codes, grid) -> x_hat``.

>>> import torch
>>> m = PatchCodec(PatchCodecConfig.tiny())
>>> out = m(torch.randint(0, 256, (1, 3, 64, 96)).float(), rate_bits=64)
>>> tuple(out["x_hat"].shape), tuple(m.compress(torch.zeros(1, 3, 64, 96), 64).shape)
((1, 3, 64, 96), (6, 64))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..norm.bsn import BitShiftNorm
from ..quant.ste import sign_ste
from ..quant.weight import QuantSpec, WeightQuantizer, bits_per_code
from .nqe import LayerSpec, NQEConfig, QConvBlock, _sample_channels, convert_blocks_to_bsn

__all__ = [
    "PatchCodecConfig",
    "PatchEncoder",
    "PatchDecoder",
    "Refiner",
    "CodeContext",
    "PatchCodec",
    "patchify",
    "unpatchify",
    "budget",
    "PATCH",
    "BUDGET_BITS",
]

PATCH = 32
BUDGET_BITS = 1 << 20


@dataclass(frozen=True)
class PatchCodecConfig:
    """Everything needed to rebuild a :class:`PatchCodec` (saved as JSON in every checkpoint)."""

    enc_layers: tuple[LayerSpec, ...] = (
        LayerSpec(32, levels=5, pool=True),
        LayerSpec(64, levels=3, pool=True),
        LayerSpec(128, levels=3, groups=2, pool=True),
        LayerSpec(128, levels=2),
    )
    code_channels: int = 32  # x 16 grid positions = 512 bits max
    code_levels: int = 3
    rates: tuple[int, ...] = (128, 256, 512)  # bits per 32x32 patch
    quantize: bool = True  # False: the float encoder of training stage 1 (ReLU, float weights)
    norm: str = "bn"  # "bn" | "bsn"
    act_bits: int = 2
    act_mode: str = "floor"
    shift_bits: int = 4
    offset_bits: int = 12
    bsn_quantile: float = 0.9
    step_rule: str = "heq"
    dec_channels: tuple[int, int, int, int] = (96, 64, 48, 32)  # at 4x4, 8x8, 16x16, 32x32
    refine_channels: int = 32
    refine_dilations: tuple[int, ...] = (1, 2, 4, 8, 1)
    # [I] beyond the paper: width of a cross-patch code context module (0 = none, the paper's purely
    # per-patch g_s). It reads the whole frame's code map and adds its features to g_s's first layer.
    code_context: int = 0
    code_context_dilations: tuple[int, ...] = (1, 2, 1)
    name: str = "codec-nested"

    # -- derived -------------------------------------------------------------------------
    @property
    def grid(self) -> int:
        """Side of the code grid: the encoder pools 32 -> 32 / 2^pools."""
        return PATCH >> sum(1 for l in self.enc_layers if l.pool)

    @property
    def max_bits(self) -> int:
        return self.code_channels * self.grid * self.grid

    def channels_for(self, rate_bits: int) -> int:
        if rate_bits not in self.rates:
            raise ValueError(f"rate {rate_bits} bits/patch is not one of this model's rates {list(self.rates)}")
        return rate_bits // (self.grid * self.grid)

    def nqe_config(self) -> NQEConfig:
        """The NQE settings shared by the encoder's conv blocks."""
        return NQEConfig(
            layers=self.enc_layers, act_bits=self.act_bits, act_mode=self.act_mode, norm=self.norm,
            bsn_quantile=self.bsn_quantile, shift_bits=self.shift_bits, offset_bits=self.offset_bits,
            quantize=self.quantize, step_rule=self.step_rule, name=self.name,
        )

    # -- (de)serialization -----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["enc_layers"] = [asdict(l) for l in self.enc_layers]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PatchCodecConfig":
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown patch codec config fields: {sorted(unknown)}")
        d["enc_layers"] = tuple(LayerSpec(**l) for l in d["enc_layers"])
        for k in ("rates", "dec_channels", "refine_dilations", "code_context_dilations"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def with_(self, **kw) -> "PatchCodecConfig":
        return replace(self, **kw)

    @classmethod
    def tiny(cls) -> "PatchCodecConfig":
        """A very small model for tests (4x4 code grid, 4 channels = 64 bits max)."""
        return cls(
            enc_layers=(LayerSpec(8, levels=5, pool=True), LayerSpec(16, levels=3, pool=True),
                        LayerSpec(16, levels=2, groups=2, pool=True)),
            code_channels=4, rates=(32, 64), dec_channels=(16, 16, 8, 8), refine_channels=8,
            refine_dilations=(1, 2), name="codec-tiny",
        )


# ------------------------------------------------------------------------ patch helpers ---


def patchify(x: torch.Tensor, p: int = PATCH) -> torch.Tensor:
    """[N, C, H, W] (H, W multiples of p) -> [N * (H/p) * (W/p), C, p, p], row-major patch order."""
    n, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not a multiple of the patch size {p}")
    x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, c, p, p)


def unpatchify(patches: torch.Tensor, n: int, gh: int, gw: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a grid of gh x gw patches per image (the aggregation step)."""
    c, p = patches.shape[1], patches.shape[2]
    x = patches.reshape(n, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, gh * p, gw * p)


# ------------------------------------------------------------------------------ encoder ---


class CodeLayer(nn.Module):
    """Quantized 1x1 conv + norm + sign: the binary code. Integer form: ``bit = (acc + o_c >= 0)``."""

    def __init__(self, cin: int, cfg: PatchCodecConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.code_channels, cin, 1, 1))
        nn.init.kaiming_normal_(self.weight, nonlinearity="linear")
        self.quant = WeightQuantizer(QuantSpec(cfg.code_levels if cfg.quantize else 0, cfg.step_rule))
        self.norm: nn.Module = (
            BitShiftNorm(cfg.code_channels, 0, cfg.shift_bits, cfg.offset_bits) if cfg.norm == "bsn"
            else nn.BatchNorm2d(cfg.code_channels)
        )

    def pre_sign(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quant.codes(self.weight) if self.cfg.quantize else self.weight
        return self.norm(F.conv2d(x, w.to(x.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(self.pre_sign(x))

    @torch.no_grad()
    def convert_to_bsn(self, cfg: PatchCodecConfig, x: torch.Tensor | None = None,
                       xr: torch.Tensor | None = None, samples: int = 4096, loss: str = "mse") -> dict | None:
        """BN -> BSN for a sign output: only the zero crossing matters, ``o_c = d_c / |a_c|``.

        With ``x`` (the converted encoder's features) and ``xr`` (the BN encoder's), [I] the offsets
        are instead fitted so that the bits on ``x`` reproduce the BN encoder's bits on ``xr``
        (the shift stays the quantile's: it does not change a sign, only the STE gradient scale).
        """
        bn = self.norm
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        d = bn.bias - a * bn.running_mean
        bsn = BitShiftNorm(cfg.code_channels, 0, cfg.shift_bits, cfg.offset_bits).to(self.weight.device)
        sign = bsn.init_from_batchnorm(bn, cfg.bsn_quantile)  # sets the shift (keeps STE gradients O(1))
        k = int(bsn.shift)
        lim = bsn.offset_limit
        bsn.offset.copy_((d / a.abs().clamp_min(1e-12)).clamp(-lim - 1, lim) * 2.0**-k)
        report = None
        if x is not None:
            w = self.quant.codes(self.weight)
            target = (bn(F.conv2d(xr, w)) >= 0).float()
            acc = F.conv2d(x, w) * sign.reshape(1, -1, 1, 1)
            npos = acc.numel() // acc.shape[1]
            idx = (torch.randperm(npos, generator=torch.Generator().manual_seed(0))[:samples].to(acc.device)
                   if npos > samples else None)
            bits = lambda y: (y >= 0).float()  # noqa: E731
            report = bsn.fit_(_sample_channels(acc, idx), _sample_channels(target, idx), bits, 0, loss=loss)
        self.weight.mul_(sign.reshape(-1, 1, 1, 1))
        self.norm = bsn
        self.cfg = cfg
        return report


class PatchEncoder(nn.Module):
    """g_a: the NQE patch encoder, 32x32x3 (0..255) -> ±1 codes [N, code_channels, g, g]."""

    def __init__(self, cfg: PatchCodecConfig):
        super().__init__()
        self.cfg = cfg
        ncfg = cfg.nqe_config()
        blocks, cin = [], 3
        for spec in cfg.enc_layers:
            blocks.append(QConvBlock(cin, spec, ncfg))
            cin = spec.out
        self.blocks = nn.ModuleList(blocks)
        self.code = CodeLayer(cin, cfg)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() - 128.0
        if not self.cfg.quantize:
            x = x / 64.0
        for b in self.blocks:
            x = b(x)
        return x

    def pre_sign(self, x: torch.Tensor) -> torch.Tensor:
        return self.code.pre_sign(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(self.pre_sign(x))

    @torch.no_grad()
    def convert_to_bsn(self, calib: torch.Tensor | None = None, shift_search: int = 2, samples: int = 4096,
                       loss: str = "mse") -> "PatchEncoder":
        """Phase 2 of NQE training: every BatchNorm -> layer-shared BitShiftNorm (in place).

        Without ``calib``: the quantile conversion. With ``calib`` (uint8 patches [N, 3, 32, 32]), [I]
        the calibrated conversion of :meth:`megabit.models.nqe.NQE.convert_to_bsn`: layer by layer,
        fed by the converted layers, shifts and offsets reproduce the BN encoder's activation codes,
        and the code layer's offsets its bits. The fit's report is kept in ``self.bsn_fit``.
        """
        if self.cfg.norm == "bsn":
            return self
        if not self.cfg.quantize:
            raise ValueError("BSN needs the quantized (integer-accumulator) encoder")
        cfg = self.cfg.with_(norm="bsn")
        was_training = self.training
        self.eval()  # quantizer steps and BN statistics stay as trained
        x = None
        if calib is not None:
            if calib.ndim != 4 or tuple(calib.shape[1:]) != (3, PATCH, PATCH):
                raise ValueError(f"calibration patches must be [N, 3, {PATCH}, {PATCH}], got {list(calib.shape)}")
            x = calib.to(self.code.weight.device).float() - 128.0
        self.bsn_fit, x, xr = convert_blocks_to_bsn(self.blocks, cfg.nqe_config(), x, shift_search, samples, loss)
        code_fit = self.code.convert_to_bsn(cfg, x, xr, samples, loss)
        if code_fit is not None:
            self.bsn_fit.append(code_fit)
        self.cfg = cfg
        self.train(was_training)
        return self

    def quantized_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"blocks.{i}", b) for i, b in enumerate(self.blocks)] + [("code", self.code)]


# ------------------------------------------------------------------------------ decoder ---


def rate_mask(rate_bits: torch.Tensor | int, cfg: PatchCodecConfig, n: int, device=None) -> torch.Tensor:
    """[n, code_channels, 1, 1] mask keeping the first rate/16 channels of each code."""
    per = cfg.grid * cfg.grid
    r = torch.as_tensor(rate_bits, device=device).reshape(-1).expand(n)
    keep = (r // per).reshape(n, 1)
    ch = torch.arange(cfg.code_channels, device=device).reshape(1, -1)
    return (ch < keep).float().reshape(n, cfg.code_channels, 1, 1)


class PatchDecoder(nn.Module):
    """g_s, per-patch upsampling: code [N, C, g, g] (dropped channels = 0) -> patch [N, 3, 32, 32] in 0..1."""

    def __init__(self, cfg: PatchCodecConfig):
        super().__init__()
        c0, c1, c2, c3 = cfg.dec_channels
        ups = int(math.log2(PATCH // cfg.grid))
        if ups != 3:
            raise ValueError(f"the decoder expects a 4x4 code grid (3 upsamplings), got grid {cfg.grid}")
        act = nn.GELU
        self.head = nn.Sequential(nn.Conv2d(cfg.code_channels, c0, 3, padding=1), act(),
                                  nn.Conv2d(c0, c0, 3, padding=1), act())
        layers = []
        for cin, cout in ((c0, c1), (c1, c2), (c2, c3)):
            layers += [nn.Conv2d(cin, cout * 4, 3, padding=1), nn.PixelShuffle(2), act(),
                       nn.Conv2d(cout, cout, 3, padding=1), act()]
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(c3, 3, 3, padding=1)

    def forward(self, code: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``context``: optional [N, c0, g, g] features of :class:`CodeContext`, added after the head."""
        h = self.head(code)
        if context is not None:
            h = h + context
        return self.out(self.up(h)) + 0.5


class _DilatedBlock(nn.Module):
    def __init__(self, c: int, d: int):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=d, dilation=d)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.gelu(self.c1(x)))


def grid_position(h: int, w: int, period: int, device=None) -> torch.Tensor:
    """[1, 4, h, w]: sin/cos of 2*pi*(y mod period)/period and of x (cell centres): where a cell sits in its patch."""
    yy = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (2 * math.pi / period)
    xx = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (2 * math.pi / period)
    y = yy.reshape(1, 1, h, 1).expand(1, 1, h, w)
    x = xx.reshape(1, 1, 1, w).expand(1, 1, h, w)
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], 1)


class CodeContext(nn.Module):
    """[I] beyond the paper: cross-patch context for the per-patch decoder, at the code's resolution.

    The paper's g_s decodes each patch from its own bits; what the neighbours' codes say about the
    shared border is only recovered later, in pixel space, by the refinement. This module reads the
    frame's code map [N, C, g*gh, g*gw] (dropped channels zero, so it sees the rate), plus the cell's
    place in its patch, through dilated residual blocks (receptive field 19 cells ~ 150 px for
    (1, 2, 1)), and returns [N, c0, g*gh, g*gw] features added to g_s's first layer. Its last conv
    starts at zero, so a model extended with it decodes exactly as before until it is trained.
    Cheap: it runs at 1/8 resolution (~25 % of a decode's multiply-adds at width 128).
    """

    def __init__(self, cfg: PatchCodecConfig):
        super().__init__()
        c = cfg.code_context
        self.grid = cfg.grid
        self.inp = nn.Conv2d(cfg.code_channels + 4, c, 3, padding=1)
        self.blocks = nn.Sequential(*[_DilatedBlock(c, d) for d in cfg.code_context_dilations])
        self.out = nn.Conv2d(c, cfg.dec_channels[0], 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, code_map: torch.Tensor) -> torch.Tensor:
        n, _, h, w = code_map.shape
        pos = grid_position(h, w, self.grid, code_map.device).to(code_map.dtype).expand(n, -1, -1, -1)
        return self.out(self.blocks(F.gelu(self.inp(torch.cat([code_map, pos], 1)))))


class Refiner(nn.Module):
    """Full-frame refinement: residual CNN at 1/2 resolution with dilated blocks (deblocking).

    Receptive field (full-res pixels) = 2 * (1 + 2 * sum(d + 1 for d in dilations) + 2), e.g.
    dilations (1, 2, 4, 8, 1) -> ~ 2 * 41 = 82 px, i.e. more than two patches across each seam.
    """

    def __init__(self, cfg: PatchCodecConfig):
        super().__init__()
        c = cfg.refine_channels
        self.cfg = cfg
        self.inp = nn.Conv2d(4 * 3 + 4 * 4 + 1, c, 3, padding=1)  # unshuffled RGB + position + rate
        self.blocks = nn.Sequential(*[_DilatedBlock(c, d) for d in cfg.refine_dilations])
        self.out = nn.Conv2d(c, 4 * 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts as the identity: refinement can only learn to help

    @staticmethod
    def position(h: int, w: int, device=None) -> torch.Tensor:
        """[1, 4, h, w]: sin/cos of 2*pi*(y mod 32)/32 and of x (full-res pixel centres)."""
        return grid_position(h, w, PATCH, device)

    def forward(self, x: torch.Tensor, rate_frac: torch.Tensor | float) -> torch.Tensor:
        n, _, h, w = x.shape
        pos = F.pixel_unshuffle(self.position(h, w, x.device).to(x.dtype).expand(n, -1, -1, -1), 2)
        xs = F.pixel_unshuffle(x - 0.5, 2)
        r = torch.as_tensor(rate_frac, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1).expand(n, 1, h // 2, w // 2)
        y = self.out(self.blocks(F.gelu(self.inp(torch.cat([xs, pos, r], 1)))))
        return x + F.pixel_shuffle(y, 2)


# ------------------------------------------------------------------------------- codec ---


class PatchCodec(nn.Module):
    """NQE patch encoder + PURENET decoder (arXiv 2501.05097), nested fixed rates 128/256/512 bits.

    Input images are float 0..255 (or uint8), NCHW, H and W multiples of 32. Images returned are
    float on the 0..255 scale, unclipped (callers round and clip to uint8).
    """

    def __init__(self, cfg: PatchCodecConfig):
        super().__init__()
        self.cfg = cfg
        self.g_a = PatchEncoder(cfg)
        self.g_s = PatchDecoder(cfg)
        self.refine = Refiner(cfg)
        self.ctx = CodeContext(cfg) if cfg.code_context > 0 else None

    @torch.no_grad()
    def convert_to_bsn(self, calib: torch.Tensor | None = None, **kw) -> "PatchCodec":
        """The encoder's BN -> BSN conversion (:meth:`PatchEncoder.convert_to_bsn`), configs kept in step."""
        self.g_a.convert_to_bsn(calib, **kw)
        self.cfg = self.g_a.cfg
        self.refine.cfg = self.cfg
        return self

    # -- pieces --------------------------------------------------------------------------
    def decode_patches(self, codes: torch.Tensor, rate_bits, grid: tuple[int, int, int] | None = None,
                       chunk: int | None = None) -> torch.Tensor:
        """codes ±1 [P, C, g, g] -> patches 0..1 [P, 3, 32, 32] (channels beyond the rate dropped).

        ``grid`` = (n, gh, gw): the patches are n frames of gh x gw (row-major), so that the code
        context module (if the model has one) sees each patch's neighbours; without it every patch
        is decoded as a frame of its own. ``chunk``: run g_s on at most this many patches at a time.
        """
        m = rate_mask(rate_bits, self.cfg, codes.shape[0], codes.device)
        codes = codes * m
        feat = None
        if self.ctx is not None:
            n, gh, gw = grid if grid is not None else (codes.shape[0], 1, 1)
            if n * gh * gw != codes.shape[0]:
                raise ValueError(f"grid {n}x{gh}x{gw} does not match {codes.shape[0]} patches")
            feat = patchify(self.ctx(unpatchify(codes, n, gh, gw)), self.cfg.grid)
        step = chunk or codes.shape[0]
        return torch.cat([self.g_s(codes[i : i + step], None if feat is None else feat[i : i + step])
                          for i in range(0, codes.shape[0], step)], 0)

    def forward(self, x: torch.Tensor, rate_bits: int | torch.Tensor | None = None, refine: bool = True) -> dict:
        """Training/eval pass. ``rate_bits``: int, or one per image; default the largest rate."""
        n, _, h, w = x.shape
        gh, gw = h // PATCH, w // PATCH
        rate_bits = max(self.cfg.rates) if rate_bits is None else rate_bits
        r = torch.as_tensor(rate_bits, device=x.device).reshape(-1).expand(n)
        codes = self.g_a(patchify(x))
        pr = r.repeat_interleave(gh * gw)
        x_patch = unpatchify(self.decode_patches(codes, pr, (n, gh, gw)), n, gh, gw)
        x_hat = self.refine(x_patch, r.float() / self.cfg.max_bits) if refine else x_patch
        half = torch.full_like(codes, 0.5)
        return {"x_hat": x_hat * 255.0, "x_patch": x_patch * 255.0, "codes": codes, "likelihoods": {"y": half}}

    @torch.no_grad()
    def compress(self, x: torch.Tensor, rate_bits: int) -> torch.Tensor:
        """[1, 3, H, W] 0..255 (H, W multiples of 32) -> bits uint8 [gh*gw, rate_bits] (0/1), row-major."""
        k = self.cfg.channels_for(rate_bits)
        codes = self.g_a(patchify(x))[:, :k]  # [P, k, g, g]
        return (codes > 0).to(torch.uint8).reshape(codes.shape[0], -1)

    def codes_from_bits(self, bits: torch.Tensor, rate_bits: int) -> torch.Tensor:
        """bits [P, rate_bits] (0/1, layout of :meth:`compress`) -> codes ±1 [P, code_channels, g, g],
        the channels beyond the rate zero ("not sent")."""
        k, g = self.cfg.channels_for(rate_bits), self.cfg.grid
        p = bits.shape[0]
        codes = torch.zeros(p, self.cfg.code_channels, g, g)
        codes[:, :k] = bits.float().reshape(p, k, g, g) * 2 - 1
        return codes

    @torch.no_grad()
    def decompress(self, bits: torch.Tensor, gh: int, gw: int, rate_bits: int, refine: bool = True) -> torch.Tensor:
        """Inverse of :meth:`compress`: bits [gh*gw, rate_bits] -> image [1, 3, 32gh, 32gw] 0..255 float."""
        codes = self.codes_from_bits(bits, rate_bits)
        x = unpatchify(self.decode_patches(codes, rate_bits, (1, gh, gw)), 1, gh, gw)
        if refine:
            x = self.refine(x, rate_bits / self.cfg.max_bits)
        return x * 255.0


# ------------------------------------------------------------------------------ budget ---


def budget(model: PatchCodec | PatchEncoder | PatchCodecConfig) -> dict:
    """Stored bits of the edge encoder, per layer: weight codes + BSN shift and offsets.

    Only the encoder counts (the decoder runs on the server). Returns
    ``{"layers": [{"name", "weights", "weight_bits", "norm_bits", "bits"}...], "total_bits", "budget_bits", "fits"}``
    plus the keys of the classifier's :func:`megabit.export.budget_table` (``kind``, ``bits_per_weight``,
    ``other_bits``, ``total_bits`` per row; ``model``, ``n_weights``, ``weight_bits``, ``limit_bits``), so that ``megabit budget`` prints either with one formatter.
    The per-layer weight bits equal the raw-coded ``.mbit`` payload of the patch encoder
    (``megabit pack --coder raw``) and the norm bits its offsets plus the 4-bit shifts.
    """
    if isinstance(model, PatchCodec):
        model = model.g_a
    cfg = model if isinstance(model, PatchCodecConfig) else model.cfg
    rows, cin = [], 3
    specs = [(f"blocks.{i}", s.out, cin_, s.kernel, s.groups, s.levels)
             for i, (s, cin_) in enumerate(zip(cfg.enc_layers, [3] + [l.out for l in cfg.enc_layers[:-1]]))]
    specs.append(("code", cfg.code_channels, cfg.enc_layers[-1].out, 1, 1, cfg.code_levels))
    for name, cout, cin, k, g, levels in specs:
        nw = cout * (cin // g) * k * k
        b = bits_per_code(levels)
        norm_bits = cfg.shift_bits + cout * cfg.offset_bits
        kind = f"conv{k}x{k}" + (f" g{g}" if g > 1 else "")
        rows.append({"name": name, "kind": kind, "weights": nw, "levels": levels, "bits_per_weight": b,
                     "weight_bits": nw * b, "norm_bits": norm_bits, "other_bits": 0,
                     "bits": nw * b + norm_bits, "total_bits": nw * b + norm_bits})
    total = sum(r["bits"] for r in rows)
    return {"model": cfg.name, "layers": rows, "n_weights": sum(r["weights"] for r in rows),
            "weight_bits": sum(r["weight_bits"] for r in rows), "total_bits": total, "budget_bits": BUDGET_BITS,
            "limit_bits": BUDGET_BITS, "fits": total <= BUDGET_BITS}
