"""CIFAR ResNet-20 with quantized, entropy-codable weights (the setting of arXiv 2406.06237 Table I).

ResNet-20 of He et al. 2016 (§4.2, "Deep Residual Learning"): a 3x3 conv with 16 channels, then 3
stages of 3 basic blocks (two 3x3 convs each) with 16/32/64 channels, stride 2 at the first block
of stages 2 and 3, global average pool, a 10-way linear layer; ≈0.27 M parameters.

::

    uint8 image ─► (x/255 − mean)/std ─► conv3x3(16) [8b] ─ BN ─ ReLU
        ─► 3 × BasicBlock(16) ─► 3 × BasicBlock(32, /2) ─► 3 × BasicBlock(64, /2)
        ─► avg-pool ─► FC(10) [8b] ─► logits
    BasicBlock: x ─ qconv3x3 ─ BN ─ ReLU ─ qconv3x3 ─ BN ─(+ shortcut(x))─ ReLU

* Weights only are compressed, as in 2406.06237: activations stay float, BatchNorm stays float.
* The 18 body convs carry a :class:`~megabit.quant.weight.WeightQuantizer` of the configured
  scheme (binary 2, ternary 3, 4-level without zero, 5/7-level zero-point, or per-layer levels
  from a :class:`~megabit.quant.precision.PrecisionPlan`).
* [I] First conv and final FC are kept at 8 bits (255-level zero-point grid, absmax step,
  ``edge_levels=255``) or float (``edge_levels=0``): the usual convention for low-bit ResNets,
  the paper does not say what it did. They are 432 + 640 weights (0.4 % of the model).
* [I] Shortcuts are He et al.'s option A (identity, stride-2 subsampling and zero-padded
  channels), parameter-free, which is what gives 0.27 M parameters; the paper's choice is not public.

Entropy accounting: :func:`export_codes` gives each quantized layer's integer codes,
:func:`entropy_report` their empirical entropy and tANS-coded size (payload and frequency-table
bytes counted separately), :func:`packed_size` the bytes of a complete weight file.

>>> m = ResNet(ResNetConfig(levels=5))
>>> round(sum(p.numel() for p in m.parameters()) / 1e6, 2)
0.27
>>> len(quantized_layers(m, include_edges=False))
18
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..quant.weight import QuantSpec, WeightQuantizer, bits_per_code, code_range

__all__ = ["ResNetConfig", "ResNet", "QConv2d", "QLinear", "SCHEMES", "scheme_config", "quantized_layers",
           "export_codes", "entropy_report", "packed_size", "apply_levels", "ARCHS", "arch_config"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ResNetConfig:
    """ResNet-20 (depth 6k+2 with ``blocks_per_stage = k``) and its weight quantization.

    levels: body conv levels (0 float, 2 binary, 3 ternary, 4 no-zero, 5/7/... zero-point).
    layer_levels: per-body-layer override (18 entries in forward order, e.g. from a precision plan);
        empty = ``levels`` everywhere.
    step_rule / per_channel / momentum: the body quantizers' :class:`QuantSpec` fields.
    edge_levels: first conv and FC levels (255 = 8-bit zero-point, 0 = float).
    """

    levels: int = 0
    layer_levels: tuple[int, ...] = ()
    step_rule: str = "heq"
    per_channel: bool = False
    momentum: float = 0.1
    edge_levels: int = 255
    widths: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = 3
    num_classes: int = 10
    name: str = "resnet20"

    def __post_init__(self) -> None:
        n_body = 2 * len(self.widths) * self.blocks_per_stage
        if self.layer_levels and len(self.layer_levels) != n_body:
            raise ValueError(f"layer_levels needs {n_body} entries (one per body conv), got {len(self.layer_levels)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetConfig":
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ResNet config fields: {sorted(unknown)}")
        for k in ("layer_levels", "widths"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_(self, **kw) -> "ResNetConfig":
        return replace(self, **kw)

    def body_levels(self) -> list[int]:
        n_body = 2 * len(self.widths) * self.blocks_per_stage
        return list(self.layer_levels) if self.layer_levels else [self.levels] * n_body


#: the Table I schemes: name -> config (the entropy-trained mixed scheme starts from a 15-bin grid)
SCHEMES: dict[str, ResNetConfig] = {
    "float": ResNetConfig(levels=0, edge_levels=0),
    "binary": ResNetConfig(levels=2),
    "ternary": ResNetConfig(levels=3),  # NQE's histogram-equalized step: equiprobable levels, H = log2 3
    # [I] the paper's zero-point (and 4-level) quantizers as classic uniform grids with a range-based
    # (absmax) step: the bell-shaped weight histogram then leaves the outer bins rare, which is what an
    # entropy coder can exploit (HEQ would make every level equiprobable: H = log2(levels))
    "4level": ResNetConfig(levels=4, step_rule="absmax"),
    "5level-zp": ResNetConfig(levels=5, step_rule="absmax"),
    "7level-zp": ResNetConfig(levels=7, step_rule="absmax"),
    # [I] wide zero-point grid + absmax step: the entropy penalty can empty the outer bins
    "mixed-entropy": ResNetConfig(levels=15, step_rule="absmax"),
}


#: body shapes: name -> (widths of the stages, blocks per stage). "resnet18" is the CIFAR ResNet-18 body
#: (4 stages x 2 basic blocks, 16 body convs, 3x3 stem) [I] with the same parameter-free option-A shortcut
#: as ResNet-20 instead of 1x1 projections (those would be 3 more quantized layers; the paper's choice
#: is not known); ``width`` scales it (64 = the usual ResNet-18, 32 = a quarter of its compute).
ARCHS: dict[str, tuple[tuple[int, ...], int]] = {
    "resnet20": ((16, 32, 64), 3),
    "resnet18": ((64, 128, 256, 512), 2),
}


def arch_config(cfg: ResNetConfig, arch: str = "resnet20", width: int | None = None) -> ResNetConfig:
    """``cfg`` with the body of ``arch``; ``width`` (first-stage channels) scales every stage."""
    try:
        widths, blocks = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}") from None
    if width is not None:
        if not 1 <= width <= 1024:
            raise ValueError(f"width must be in 1..1024, got {width}")
        widths = tuple(width * w // widths[0] for w in widths)
    name = arch if width is None or width == ARCHS[arch][0][0] else f"{arch}-w{width}"
    return cfg.with_(widths=widths, blocks_per_stage=blocks, name=name, layer_levels=())


def scheme_config(name: str) -> ResNetConfig:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; known: {', '.join(SCHEMES)}") from None


class QConv2d(nn.Conv2d):
    """Conv2d whose weight goes through a WeightQuantizer (fake-quant: codes · unit)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, spec: QuantSpec):
        super().__init__(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.quant = WeightQuantizer(spec, channels=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quant(self.weight)
        return F.conv2d(x, w.to(x.dtype), None, self.stride, self.padding)


class QLinear(nn.Linear):
    """Linear layer with a quantized weight and a float bias."""

    def __init__(self, cin: int, cout: int, spec: QuantSpec):
        super().__init__(cin, cout)
        self.quant = WeightQuantizer(spec, channels=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quant(self.weight).to(x.dtype), self.bias.to(x.dtype))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, spec1: QuantSpec, spec2: QuantSpec):
        super().__init__()
        self.conv1 = QConv2d(cin, cout, 3, stride, spec1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = QConv2d(cout, cout, 3, 1, spec2)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # option A: subsample, zero-pad the new channels (parameter-free)
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def _spec(levels: int, cfg: ResNetConfig) -> QuantSpec:
    return QuantSpec(levels, cfg.step_rule if levels else "heq", cfg.per_channel, cfg.momentum)


def _edge_spec(cfg: ResNetConfig) -> QuantSpec:
    return QuantSpec(cfg.edge_levels, "absmax", True, cfg.momentum)


class ResNet(nn.Module):
    """CIFAR ResNet (default ResNet-20) with quantized weights; input uint8 or float 0..255, NCHW."""

    def __init__(self, cfg: ResNetConfig = ResNetConfig()):
        super().__init__()
        self.cfg = cfg
        w0 = cfg.widths[0]
        self.conv1 = QConv2d(3, w0, 3, 1, _edge_spec(cfg))
        self.bn1 = nn.BatchNorm2d(w0)
        lv = iter(cfg.body_levels())
        blocks, cin = [], w0
        for si, w in enumerate(cfg.widths):
            for bi in range(cfg.blocks_per_stage):
                stride = 2 if si > 0 and bi == 0 else 1
                blocks.append(BasicBlock(cin, w, stride, _spec(next(lv), cfg), _spec(next(lv), cfg)))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = QLinear(cin, cfg.num_classes, _edge_spec(cfg))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).reshape(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR_STD).reshape(1, 3, 1, 1) * 255, persistent=False)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare_input(x)  # elementwise: keeps channels_last if the input has it
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def quantized_layers(model: ResNet, include_edges: bool = True) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every layer with a quantizer, forward order; float layers (levels 0) skipped."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (QConv2d, QLinear)) and m.quant.spec.levels:
            if not include_edges and name in ("conv1", "fc"):
                continue
            out.append((name, m))
    return out


def body_layer_names(model: ResNet) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, QConv2d) and n != "conv1"]


@torch.no_grad()
def apply_levels(model: ResNet, levels: dict[str, int]) -> ResNet:
    """A new model whose body convs use these levels (e.g. ``plan.levels()``); weights and BN copied.

    The new quantizers start uninitialized, so their step is recomputed from the weights.
    """
    names = body_layer_names(model)
    unknown = set(levels) - set(names)
    if unknown:
        raise ValueError(f"not body conv layers: {sorted(unknown)}")
    cur = dict(zip(names, model.cfg.body_levels()))
    cur.update(levels)
    new = ResNet(model.cfg.with_(layer_levels=tuple(cur[n] for n in names)))
    sd = {k: v for k, v in model.state_dict().items() if not any(k == f"{n}.quant.{b}" for n in levels for b in ("step", "initialized"))}
    missing, unexpected = new.load_state_dict(sd, strict=False)
    assert not unexpected and all(".quant." in k for k in missing), (missing, unexpected)
    return new.train(model.training)


@torch.no_grad()
def export_codes(model: ResNet, include_edges: bool = True) -> dict[str, dict]:
    """Integer codes of every quantized layer: name -> {"codes": int8/int16 array, "levels", "unit"}.

    The weights the network uses are ``codes * unit`` (``unit`` per output channel or scalar).
    Eval mode: steps are frozen, nothing is updated.
    """
    was = model.training
    model.eval()
    out = {}
    for name, m in quantized_layers(model, include_edges):
        c = m.quant.codes(m.weight.detach().float()).round()
        dt = np.int8 if m.quant.spec.levels <= 255 else np.int16
        out[name] = {"codes": c.numpy().astype(dt), "levels": m.quant.spec.levels,
                     "unit": m.quant.unit().detach().float().numpy().copy()}
    model.train(was)
    return out


def _symbols(codes: np.ndarray, levels: int) -> np.ndarray:
    """Codes -> level indices 0..levels-1 (position in ``code_range``)."""
    lo = code_range(levels)[0]
    idx = codes.astype(np.int64) - lo
    return idx // 2 if levels % 2 == 0 else idx


def entropy_report(model: ResNet, coder: str = "tans", table_log: int | None = None, n_streams: int = 1,
                   include_edges: bool = True) -> dict:
    """Per-layer empirical entropy and ANS-coded size of the quantized weights.

    Per layer: ``entropy_bits_per_weight`` (ideal), ``payload_bytes`` (the coder's output: header
    + streams), ``table_bytes`` (the serialized frequency table, counted separately),
    ``coded_bits_per_weight`` (payload only) and ``raw_bits_per_weight`` (ceil(log2 n) packing).
    Totals are given over the body convs (``body``) and over all quantized layers (``all``).
    """
    from ..entropy import encode_array, entropy_bits, freqs_to_bytes

    rows = []
    for name, d in export_codes(model, include_edges).items():
        sym = _symbols(d["codes"], d["levels"]).reshape(-1)
        n = sym.size
        h = entropy_bits(np.bincount(sym, minlength=d["levels"])) / n
        payload, freqs = encode_array(sym, coder=coder, table_log=table_log, n_streams=n_streams)
        rows.append({"name": name, "levels": d["levels"], "n_weights": n, "entropy_bits_per_weight": h,
                     "payload_bytes": len(payload), "table_bytes": len(freqs_to_bytes(freqs)),
                     "coded_bits_per_weight": 8 * len(payload) / n, "raw_bits_per_weight": bits_per_code(d["levels"]),
                     "occupancy": (np.bincount(sym, minlength=d["levels"]) / n).round(4).tolist()})

    def tot(rs: list[dict]) -> dict:
        n = sum(r["n_weights"] for r in rs)
        if not n:
            return {"n_weights": 0}
        return {"n_weights": n,
                "entropy_bits_per_weight": sum(r["entropy_bits_per_weight"] * r["n_weights"] for r in rs) / n,
                "coded_bits_per_weight": sum(8 * r["payload_bytes"] for r in rs) / n,
                "coded_with_tables_bits_per_weight": sum(8 * (r["payload_bytes"] + r["table_bytes"]) for r in rs) / n,
                "raw_bits_per_weight": sum(r["raw_bits_per_weight"] * r["n_weights"] for r in rs) / n,
                "payload_bytes": sum(r["payload_bytes"] for r in rs), "table_bytes": sum(r["table_bytes"] for r in rs)}

    body = [r for r in rows if r["name"] not in ("conv1", "fc")]
    return {"coder": coder, "layers": rows, "body": tot(body), "all": tot(rows)}


def packed_size(model: ResNet, coder: str = "tans", report: dict | None = None) -> dict:
    """Bytes of a complete weight file for this model (what a deployment would store).

    Counted: quantized layers' coded payload + frequency tables + their steps (fp32 per tensor or per
    channel) + float weights of unquantized layers (fp32) + BatchNorm (4 fp32 per channel: scale,
    shift, running mean, var — foldable to 2, we count 4) + FC bias (fp32). Not counted: the
    config JSON and container headers (a few hundred bytes, no format is defined for ResNet yet).
    """
    rep = report or entropy_report(model, coder)
    q = {r["name"] for r in rep["layers"]}
    float_w, step_b, bn_b, bias_b = 0, 0, 0, 0
    for name, m in model.named_modules():
        if isinstance(m, (QConv2d, QLinear)):
            if name in q:
                step_b += 4 * m.quant.step.numel()
            else:
                float_w += 4 * m.weight.numel()
            if isinstance(m, QLinear):
                bias_b += 4 * m.bias.numel()
        elif isinstance(m, nn.BatchNorm2d):
            bn_b += 4 * 4 * m.num_features
    coded = rep["all"].get("payload_bytes", 0) + rep["all"].get("table_bytes", 0)
    total = coded + float_w + step_b + bn_b + bias_b
    return {"coded_weight_bytes": coded, "float_weight_bytes": float_w, "step_bytes": step_b, "bn_bytes": bn_b,
            "bias_bytes": bias_b, "total_bytes": total}
