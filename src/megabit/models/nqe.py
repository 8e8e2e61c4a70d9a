"""NQE: the VGG-7-style mixed-precision quantized encoder of arXiv 2501.05097.

::

    uint8 image ─(−128)─► [QConv 3b ─ Norm ─ HWMSB] ─► [QConv ─ Norm ─ HWMSB ─ MaxPool] ─► ...
                           quinary weights             ternary / binary, group convs deeper
         ... ─► global sum-pool ─► QLinear (head) ─► logits          (classifier)
         ... ─► QConv 1x1 ─► sign ─► binary code                      (patch encoder, later)

Every block computes on integers: the input is ``pixel − 128``, weights are integer codes
(binary ±1, ternary {−1,0,1}, quinary {−2..2}), activations are HWMSB codes {0,1,2,3}, so each
conv produces an integer accumulator. Normalization is BatchNorm in phase 1 and layer-shared
Bit-Shift Normalization in phase 2 (``NQE.convert_to_bsn``). Max-pooling is applied to the
activation codes (exact in integers). In BSN mode the whole network is integer-exact: see
``megabit.export.integer``.

The paper's layer table is not public; the ``nqe-1mbit`` preset below is our design
(3b → 2b → 1b from shallow to deep, group convs in the wide layers), sized to <= 2^20 bits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..norm.bsn import BitShiftNorm
from ..quant.act import hwmsb_codes
from ..quant.ste import round_ste
from ..quant.weight import QuantSpec, WeightQuantizer

__all__ = ["LayerSpec", "NQEConfig", "NQE", "PRESETS", "convert_blocks_to_bsn", "get_preset", "layer_offset_bits",
           "layer_shift_bits"]


@dataclass(frozen=True)
class LayerSpec:
    """One conv block: ``out`` channels, ``kernel``, ``groups``, weight ``levels``, ``pool`` after.

    ``step_rule`` / ``offset_bits`` / ``shift_bits``: this block's weight step rule and BSN field widths,
    ``None`` for the config's (``NQEConfig.step_rule`` / ``offset_bits`` / ``shift_bits``). [I] beyond the
    paper (one rule and one width for every layer): an 8-bit absmax first layer (``nqe-1mbit-ans-hr-w8``)
    has ~2^6 times larger accumulators, so larger shifts and offsets.
    """

    out: int
    levels: int = 3
    groups: int = 1
    kernel: int = 3
    pool: bool = False
    step_rule: str | None = None
    offset_bits: int | None = None
    shift_bits: int | None = None


@dataclass(frozen=True)
class NQEConfig:
    layers: tuple[LayerSpec, ...]
    in_channels: int = 3
    num_classes: int = 10
    head_levels: int = 3
    act_bits: int = 2
    act_mode: str = "floor"  # HWMSB reading; "round" = uniform 2-bit rounding
    act_leak: float = 0.0
    norm: str = "bn"  # "bn" (phase 1) or "bsn" (phase 2)
    bsn_quantile: float = 0.9
    shift_bits: int = 4
    offset_bits: int = 12
    # [I] beyond the paper (its BSN: one shift per layer): "channel" stores a shift per channel, and
    # bsn_mantissa_bits B a B-bit mantissa with each shift (scale (1 + m/2^B) 2^-k); see megabit.norm.bsn
    bsn_granularity: str = "layer"
    bsn_mantissa_bits: int = 0
    head_bias_bits: int = 16
    quantize: bool = True  # False: the same architecture in float (ReLU, float weights, BN)
    step_rule: str = "heq"
    step_momentum: float = 0.1
    name: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        # a layer's optional overrides are written only when set: files without them stay byte for byte
        d["layers"] = [{k: v for k, v in asdict(l).items() if v is not None} for l in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NQEConfig":
        d = dict(d)
        d["layers"] = tuple(LayerSpec(**l) for l in d["layers"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NQE config fields: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_(self, **kw) -> "NQEConfig":
        return replace(self, **kw)


# [I] the 8-bit first layer's BSN field widths: its accumulators are ~2^6 times a quinary layer's. On a
# trained one (session 41) the per-channel conversion wanted shifts up to 16 (4 bits cap them at 15) and
# offsets up to |o| = 10,990 (15 bits); 5 and 18 bits leave room.
SHIFT_W8, OFF_W8 = 5, 18

# [I] Our layer table: the paper's is not public. 3b (quinary) in the first two layers, 2b
# (ternary) in the middle, 1b (binary) deep, group convolutions where the layer is widest.
PRESETS: dict[str, NQEConfig] = {
    "nqe-1mbit": NQEConfig(
        name="nqe-1mbit",
        layers=(
            LayerSpec(64, levels=5, pool=True),
            LayerSpec(128, levels=3),
            LayerSpec(128, levels=3, groups=2, pool=True),
            LayerSpec(256, levels=2),
            LayerSpec(256, levels=2, groups=2, pool=True),
            LayerSpec(256, levels=2, groups=8),
        ),
        head_levels=5,
    ),
    # [I] the answer to "what does the budget freed by ANS coding buy": ~10 % more weights (140/264
    # channels instead of 128/256). Raw bit-packing needs 1,089,280 bits (does NOT fit 2^20); the
    # tANS-coded .mbit is ~1,025,360 bits (fits; `megabit budget nqe-1mbit-ans --coder tans`).
    "nqe-1mbit-ans": NQEConfig(
        name="nqe-1mbit-ans",
        layers=(
            LayerSpec(64, levels=5, pool=True),
            LayerSpec(140, levels=3),
            LayerSpec(140, levels=3, groups=2, pool=True),
            LayerSpec(264, levels=2),
            LayerSpec(264, levels=2, groups=2, pool=True),
            LayerSpec(264, levels=2, groups=8),
        ),
        head_levels=5,
    ),
    # [I] the same weights (bit for bit the same budget) with the first max-pool one layer later: the
    # second conv (64 -> 128, ternary) runs at 32x32 instead of 16x16. Bits are what the 1-Mbit device
    # stores; multiply-adds are not budgeted (1.73x nqe-1mbit's: 135 M vs 78 M per image).
    "nqe-1mbit-hr": NQEConfig(
        name="nqe-1mbit-hr",
        layers=(
            LayerSpec(64, levels=5),
            LayerSpec(128, levels=3, pool=True),
            LayerSpec(128, levels=3, groups=2, pool=True),
            LayerSpec(256, levels=2),
            LayerSpec(256, levels=2, groups=2, pool=True),
            LayerSpec(256, levels=2, groups=8),
        ),
        head_levels=5,
    ),
    # [I] both: nqe-1mbit-ans's widths (fits only tANS-coded) with nqe-1mbit-hr's pool positions.
    "nqe-1mbit-ans-hr": NQEConfig(
        name="nqe-1mbit-ans-hr",
        layers=(
            LayerSpec(64, levels=5),
            LayerSpec(140, levels=3, pool=True),
            LayerSpec(140, levels=3, groups=2, pool=True),
            LayerSpec(264, levels=2),
            LayerSpec(264, levels=2, groups=2, pool=True),
            LayerSpec(264, levels=2, groups=8),
        ),
        head_levels=5,
    ),
    # a small preset for tests and smoke runs
    "nqe-tiny": NQEConfig(
        name="nqe-tiny",
        layers=(
            LayerSpec(16, levels=5, pool=True),
            LayerSpec(32, levels=3, groups=2, pool=True),
            LayerSpec(32, levels=2, groups=2, pool=True),
        ),
        head_levels=3,
    ),
}


def _first_layer_w8(cfg: NQEConfig, name: str) -> NQEConfig:
    """``cfg`` with its first conv on a 255-level (8-bit) absmax grid and wider BSN fields there."""
    first = replace(cfg.layers[0], levels=255, step_rule="absmax", offset_bits=OFF_W8, shift_bits=SHIFT_W8)
    return cfg.with_(name=name, layers=(first,) + cfg.layers[1:])


# [I] beyond the paper: nqe-1mbit with an 8-bit absmax first layer. Session 40's diagnostic: the
# histogram-equalized quinary first layer costs the QAT start 11 points that an absmax 8-bit grid does not
# (results/nqe_weight_quant_first_absmax_s40.json); session 41's pilot: +0.66 at the BN end
# (results/nqe_first_w8_pilot_s41.json). +8,640 weight bits, +385 BSN bits; raw bit-packing 993,593 (fits).
PRESETS["nqe-1mbit-w8"] = _first_layer_w8(PRESETS["nqe-1mbit"], "nqe-1mbit-w8")
# [I] the same first layer in the bundled default's table (fits only tANS-coded, as nqe-1mbit-ans-hr)
PRESETS["nqe-1mbit-ans-hr-w8"] = _first_layer_w8(PRESETS["nqe-1mbit-ans-hr"], "nqe-1mbit-ans-hr-w8")


def get_preset(name: str) -> NQEConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


class QConvBlock(nn.Module):
    def __init__(self, cin: int, spec: LayerSpec, cfg: NQEConfig):
        super().__init__()
        if cin % spec.groups or spec.out % spec.groups:
            raise ValueError(f"channels {cin}->{spec.out} not divisible by groups={spec.groups}")
        self.spec, self.cfg = spec, cfg
        self.weight = nn.Parameter(torch.empty(spec.out, cin // spec.groups, spec.kernel, spec.kernel))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        levels = spec.levels if cfg.quantize else 0
        self.quant = WeightQuantizer(QuantSpec(levels, spec.step_rule or cfg.step_rule, False, cfg.step_momentum))
        # [I] beyond the paper: True runs the latent float weights with quantized activations (the first
        # stage of two-stage QAT, TrainConfig.epochs_act); a training-time switch, not part of the config
        self.float_weights = False
        if cfg.norm == "bsn":
            self.norm: nn.Module = bsn_for(spec.out, cfg, spec)
        elif cfg.norm == "bn":
            self.norm = nn.BatchNorm2d(spec.out)
        else:
            raise ValueError(f"norm must be 'bn' or 'bsn', got {cfg.norm!r}")

    def weight_codes(self) -> torch.Tensor:
        return self.quant.codes(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quant.codes(self.weight) if self.cfg.quantize and not self.float_weights else self.weight
        acc = F.conv2d(x, w.to(x.dtype), None, 1, self.spec.kernel // 2, 1, self.spec.groups)
        y = self.norm(acc)
        if self.cfg.quantize:
            y = hwmsb_codes(y, self.cfg.act_bits, self.cfg.act_mode, self.cfg.act_leak)
        else:
            y = F.relu(y)
        if self.spec.pool:
            y = F.max_pool2d(y, 2)
        return y


class QHead(nn.Module):
    """Global sum-pool of activation codes, then a quantized linear layer with an integer bias.

    logits = alpha * (W_codes @ sum_hw(codes) + b_int). alpha > 0 only sets the softmax
    temperature for training; it is not stored, since argmax does not depend on it.
    """

    def __init__(self, cin: int, cfg: NQEConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.randn(cfg.num_classes, cin) * cin**-0.5)
        levels = cfg.head_levels if cfg.quantize else 0
        self.quant = WeightQuantizer(QuantSpec(levels, cfg.step_rule, False, cfg.step_momentum))
        self.bias = nn.Parameter(torch.zeros(cfg.num_classes))
        self.log_alpha = nn.Parameter(torch.tensor(-5.0))

    def int_bias(self) -> torch.Tensor:
        lim = (1 << (self.cfg.head_bias_bits - 1)) - 1
        b = torch.round(self.bias.detach().float() / self.log_alpha.detach().float().exp())
        return b.clamp(-lim - 1, lim).to(torch.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.quantize:
            return F.linear(x.float().sum((2, 3)) / (x.shape[2] * x.shape[3]), self.weight, self.bias)
        return self.accumulators(x) * self.log_alpha.exp()

    def accumulators(self, x: torch.Tensor) -> torch.Tensor:
        """Quantized head before the alpha scale: ``W_codes @ sum_hw(codes) + b_int``, integer-valued
        in BSN mode (what the integer path computes, ties included)."""
        s = x.float().sum((2, 3))
        w = self.quant.codes(self.weight)
        # bias trained in logit units, stored as an integer in accumulator units: b_int = round(b / alpha)
        lim = (1 << (self.cfg.head_bias_bits - 1)) - 1
        b = round_ste(self.bias / self.log_alpha.exp().detach()).clamp(-lim - 1, lim)
        return F.linear(s, w) + b


def bsn_for(channels: int, cfg: NQEConfig, spec: LayerSpec | None = None) -> BitShiftNorm:
    """The BitShiftNorm a config asks for (granularity, mantissa, field widths; ``spec``: the block, whose
    own shift and offset widths win where it sets them)."""
    return BitShiftNorm(channels, 0, layer_shift_bits(cfg, spec), layer_offset_bits(cfg, spec), cfg.bsn_granularity,
                        cfg.bsn_mantissa_bits)


def layer_offset_bits(cfg: NQEConfig, spec: LayerSpec | None) -> int:
    """The BSN offset width of one block: its own, else the config's."""
    return cfg.offset_bits if spec is None or spec.offset_bits is None else spec.offset_bits


def layer_shift_bits(cfg: NQEConfig, spec: LayerSpec | None) -> int:
    """The BSN shift width of one block: its own, else the config's."""
    return cfg.shift_bits if spec is None or spec.shift_bits is None else spec.shift_bits


def _sample_channels(t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """[N, C, H, W] -> [C, S]: each channel's values at the sampled positions."""
    t = t.transpose(0, 1).reshape(t.shape[1], -1)
    return t if idx is None else t[:, idx]


@torch.no_grad()
def convert_blocks_to_bsn(blocks, cfg: NQEConfig, x: torch.Tensor | None = None, shift_search: int = 2,
                          samples: int = 4096, loss: str = "mse", batch_size: int = 250, sample_seed: int = 0):
    """BN -> BSN for a chain of :class:`QConvBlock` (in place); ``cfg``: the BSN-mode config.

    Without ``x``: the quantile conversion (``BitShiftNorm.init_from_batchnorm``). With ``x`` (the
    first block's input), [I] the calibrated conversion: block by block, the shift and offsets are
    fitted so that the BSN block, fed by the already converted blocks, reproduces the BatchNorm
    chain's activation codes (teacher-forced: the target is the BN chain on its own input).
    Returns ``(reports, x, xr)``: the per-block fit reports and the converted / BN chains' outputs
    (``None`` without ``x``), so a following layer can be fitted the same way. ``samples``: positions per
    channel the fit sees (drawn from all of the calibration images' positions with ``sample_seed``).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    codes_fn = lambda y: hwmsb_codes(y, cfg.act_bits, cfg.act_mode, cfg.act_leak)  # noqa: E731
    gen = torch.Generator().manual_seed(sample_seed)
    reports, xr = [], x
    for blk in blocks:
        bn = blk.norm
        dev = blk.weight.device
        bsn = bsn_for(blk.spec.out, cfg, blk.spec).to(dev)
        if x is not None:
            w = blk.quant.codes(blk.weight)

            def conv(t: torch.Tensor) -> torch.Tensor:  # the block's integer accumulators, in batches
                return torch.cat([F.conv2d(t[i : i + batch_size], w, None, 1, blk.spec.kernel // 2, 1,
                                           blk.spec.groups) for i in range(0, len(t), batch_size)])

            def pool(t: torch.Tensor) -> torch.Tensor:
                return F.max_pool2d(t, 2) if blk.spec.pool else t

            acc = conv(x)
            # target: the BN chain's own codes (on its own input, not the converted prefix's), before pooling
            target = codes_fn(bn(conv(xr)))
            xr = pool(target)  # the BN chain's input to the next block
        sign = bsn.init_from_batchnorm(bn, cfg.bsn_quantile)
        blk.weight.mul_(sign.reshape(-1, 1, 1, 1))
        if x is not None:
            acc = acc * sign.reshape(1, -1, 1, 1)  # the flipped weights' accumulators (symmetric codes)
            npos = acc.numel() // acc.shape[1]
            idx = torch.randperm(npos, generator=gen)[:samples].to(dev) if npos > samples else None
            reports.append(bsn.fit_(_sample_channels(acc, idx), _sample_channels(target, idx), codes_fn,
                                    shift_search, loss=loss))
            x = pool(codes_fn(bsn(acc)))  # the converted block's output: the next block's input
            del acc, target
        blk.norm = bsn
        blk.cfg = cfg
    return reports, x, xr


class NQE(nn.Module):
    """The NQE classifier. Input: uint8 (or float 0..255) images, NCHW."""

    def __init__(self, cfg: NQEConfig):
        super().__init__()
        self.cfg = cfg
        blocks, cin = [], cfg.in_channels
        for spec in cfg.layers:
            blocks.append(QConvBlock(cin, spec, cfg))
            cin = spec.out
        self.blocks = nn.ModuleList(blocks)
        self.head = QHead(cin, cfg)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() - 128.0
        return x if self.cfg.quantize else x / 64.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare_input(x)
        for b in self.blocks:
            x = b(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def decision_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores whose argmax is the model's decision: the head's accumulators when quantized (exact
        integers in BSN mode, so sums over test-time flips and ties behave as in the integer path;
        ``alpha * a + alpha * b`` in fp32 can break a tie that ``a + b`` keeps), else the logits."""
        f = self.features(x)
        return self.head.accumulators(f) if self.cfg.quantize else self.head(f)

    @torch.no_grad()
    def convert_to_bsn(self, calib: torch.Tensor | None = None, shift_search: int = 2,
                       samples: int = 4096, loss: str = "mse", batch_size: int = 250, sample_seed: int = 0,
                       **bsn) -> "NQE":
        """Phase 1 → phase 2: replace each BatchNorm by a layer-shared BitShiftNorm (in place).

        Without ``calib``: shift from the ``bsn_quantile`` of the BN scales, offsets aligning the
        middle HWMSB threshold (``BitShiftNorm.init_from_batchnorm``). With ``calib`` (uint8 images
        [N, 3, H, W]), [I] the calibrated conversion: layer by layer, shift and offsets are fitted
        (``BitShiftNorm.fit_``) so that the BSN layer, fed by the already converted layers, reproduces
        the BatchNorm network's activation codes on those images (``samples`` positions per channel,
        drawn with ``sample_seed``; ``loss`` "mse" or "mismatch" of the codes).
        The fit's report is kept in ``self.bsn_fit`` (per layer: chosen and quantile shift, code MSE).
        ``bsn``: config fields of the BSN to convert to (``bsn_granularity``, ``bsn_mantissa_bits``,
        ``offset_bits``, ``shift_bits``), overriding this model's config.
        """
        if self.cfg.norm == "bsn":
            return self
        bad = set(bsn) - {"bsn_granularity", "bsn_mantissa_bits", "offset_bits", "shift_bits"}
        if bad:
            raise ValueError(f"convert_to_bsn: unknown BSN fields {sorted(bad)}")
        if not self.cfg.quantize:
            raise ValueError("BSN needs the quantized (integer-accumulator) network")
        cfg = self.cfg.with_(norm="bsn", **bsn)
        was_training = self.training
        self.eval()  # quantizer steps and BN statistics stay as trained
        dev = self.blocks[0].weight.device
        x = None
        if calib is not None:
            if calib.ndim != 4 or calib.shape[1] != self.cfg.in_channels:
                raise ValueError(f"calibration images must be [N, {self.cfg.in_channels}, H, W], got {list(calib.shape)}")
            x = self.prepare_input(calib.to(dev))
        self.bsn_fit, _, _ = convert_blocks_to_bsn(self.blocks, cfg, x, shift_search, samples, loss, batch_size, sample_seed)
        self.head.cfg = cfg
        self.cfg = cfg
        self.train(was_training)
        return self

    def quantizers(self) -> list[tuple[str, WeightQuantizer, nn.Parameter]]:
        out = [(f"blocks.{i}", b.quant, b.weight) for i, b in enumerate(self.blocks)]
        out.append(("head", self.head.quant, self.head.weight))
        return out

    @torch.no_grad()
    def quant_stats(self) -> dict:
        """Step and level occupancy per layer (to watch for weight collapse)."""
        stats = {}
        for name, q, w in self.quantizers():
            if q.spec.levels == 0:
                continue
            was = q.training
            q.eval()
            c = q.codes(w)
            q.train(was)
            stats[name] = {"step": float(q.step.mean()), "occupancy": [round(v, 4) for v in q.occupancy(c)]}
        return stats


def build_model(cfg: NQEConfig | str) -> NQE:
    if isinstance(cfg, str):
        cfg = get_preset(cfg)
    return NQE(cfg)
