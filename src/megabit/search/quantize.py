"""Per-layer b-bit weight fake-quantization of a codec (any ``nn.Module``; duck-typed).

Quantized layers are every ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear`` of the model
(``g_a``, ``g_s``, ``h_a``, ``h_s``, context/entropy-parameter networks). Everything else -- biases,
GDN ``beta``/``gamma``, the entropy bottleneck's density -- stays float ([I] FMPQ quantizes the layer
weights; the paper does not say what happens to these small tensors, so we keep them float and count
them separately as ``float_bits``).

Quantizer of one layer at ``b`` bits (symmetric, zero-point, per output channel ``c``, or one scale
for the whole layer with ``granularity="tensor"``)::

    m = 2^(b-1) - 1                       (b = 2: ternary {-1, 0, 1}; b = 8: [-127, 127])
    s_c = max|W_c| / m                    (absmax init, ``megabit.quant`` rule "absmax")
    code = clamp(round(W / s_c), -m, m)   W_hat = code * s_c

In QAT (:class:`FakeQuant` with ``learn_scale=True``) ``s_c`` is a trained parameter and the clip is
:func:`megabit.quant.clamp_leaky` (gradient ``leak`` outside [-m, m]); rounding is the identity STE.
For ``ConvTranspose2d`` (weight [in, out, k, k]) the output channel is dim 1.

Exact stored size of a plan: ``sum_n (n_weights_n * b_n + scales_n * scale_bits)`` with 32-bit
scales ([I] float32; ``scales_n`` = output channels, or 1 per layer with ``granularity="tensor"``,
the hardware-friendly single-scale layout; see :func:`plan_size_bits`).

>>> import torch
>>> fq = FakeQuant(torch.randn(4, 3, 3, 3), bits=2)
>>> w = torch.randn(4, 3, 3, 3)
>>> sorted(set(fq.codes(w).unique().tolist()) - {-1.0, 0.0, 1.0})
[]
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from megabit.quant import QuantSpec, WeightQuantizer, clamp_leaky, round_ste

__all__ = ["LayerInfo", "FakeQuant", "quantizable_layers", "layer_infos", "fake_quantize", "temporarily_quantized",
           "apply_bits", "bake", "plan_size_bits", "float_param_bits", "export_codes", "n_scales", "check_granularity",
           "GRANULARITIES", "MIN_BITS", "MAX_BITS"]

MIN_BITS, MAX_BITS = 2, 16
_QUANT_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
GRANULARITIES = ("channel", "tensor")  # one scale per output channel (default) / one per layer


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    return granularity


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer: dotted module name, weight count, output channels (= number of scales)."""

    name: str
    n_weights: int
    channels: int
    kind: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerInfo":
        return cls(name=str(d["name"]), n_weights=int(d["n_weights"]), channels=int(d["channels"]), kind=str(d["kind"]))


def _out_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.ConvTranspose2d) else 0


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every conv/linear layer with a weight, in ``named_modules`` order."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, _QUANT_TYPES) and getattr(m, "weight", None) is not None:
            out.append((name, m))
    return out


def layer_infos(model: nn.Module) -> list[LayerInfo]:
    infos = []
    for name, m in quantizable_layers(model):
        w = m.weight
        infos.append(LayerInfo(name, int(w.numel()), int(w.shape[_out_dim(m)]), type(m).__name__))
    return infos


def n_scales(li: LayerInfo, granularity: str = "channel") -> int:
    """Number of stored scales of one layer."""
    return li.channels if check_granularity(granularity) == "channel" else 1


def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int,)) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bit-width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return int(bits)


def _absmax_step(w: Tensor, bits: int, per_channel: bool = True) -> Tensor:
    """Absmax step per output channel (w has the output channel on dim 0), or one for the tensor (shape [1])."""
    q = WeightQuantizer(QuantSpec(levels=2**bits - 1, step_rule="absmax", per_channel=per_channel),
                        channels=w.shape[0] if per_channel else 1)
    return q.target_step(w.detach()).reshape(-1)


def fake_quantize(w: Tensor, bits: int, out_dim: int = 0, step: Tensor | None = None, leak: float = 0.0,
                  per_channel: bool = True) -> Tensor:
    """``clamp(round(w / s), -m, m) * s`` per output channel or per tensor (absmax ``s`` unless given)."""
    bits = _check_bits(bits)
    wt = w.transpose(0, out_dim) if out_dim else w
    s = _absmax_step(wt, bits, per_channel) if step is None else step
    s = s.reshape(-1, *([1] * (wt.dim() - 1))).to(wt.dtype)
    m = 2 ** (bits - 1) - 1
    q = clamp_leaky(round_ste(wt / s), -m, m, leak) * s
    return q.transpose(0, out_dim) if out_dim else q


class FakeQuant(nn.Module):
    """Parametrization ``W -> W_hat`` for ``torch.nn.utils.parametrize`` (QAT and frozen inference)."""

    def __init__(self, weight: Tensor, bits: int, out_dim: int = 0, leak: float = 0.0, learn_scale: bool = True,
                 per_channel: bool = True):
        super().__init__()
        self.bits = _check_bits(bits)
        self.out_dim = int(out_dim)
        self.leak = float(leak)
        self.per_channel = bool(per_channel)
        wt = weight.detach().transpose(0, self.out_dim) if self.out_dim else weight.detach()
        s = _absmax_step(wt, self.bits, self.per_channel)
        self.scale = nn.Parameter(s.clone(), requires_grad=learn_scale)

    def codes(self, w: Tensor) -> Tensor:
        wt = w.transpose(0, self.out_dim) if self.out_dim else w
        s = self.scale.abs().clamp_min(1e-12).reshape(-1, *([1] * (wt.dim() - 1))).to(wt.dtype)
        m = 2 ** (self.bits - 1) - 1
        c = clamp_leaky(round_ste(wt / s), -m, m, self.leak)
        return c.transpose(0, self.out_dim) if self.out_dim else c

    def forward(self, w: Tensor) -> Tensor:
        c = self.codes(w)
        ct = c.transpose(0, self.out_dim) if self.out_dim else c
        s = self.scale.abs().clamp_min(1e-12).reshape(-1, *([1] * (ct.dim() - 1))).to(ct.dtype)
        q = ct * s
        return q.transpose(0, self.out_dim) if self.out_dim else q

    def extra_repr(self) -> str:
        return f"bits={self.bits}, out_dim={self.out_dim}, leak={self.leak}, per_channel={self.per_channel}"


@contextmanager
def temporarily_quantized(module: nn.Module, bits: int, granularity: str = "channel") -> Iterator[None]:
    """Within the block the layer's weight is its absmax b-bit version (restored exactly afterwards)."""
    per_channel = check_granularity(granularity) == "channel"
    w = module.weight
    saved = w.data.clone()
    try:
        with torch.no_grad():
            w.data.copy_(fake_quantize(saved, bits, _out_dim(module), per_channel=per_channel))
        yield
    finally:
        w.data.copy_(saved)


def apply_bits(model: nn.Module, bits: dict[str, int], leak: float = 0.0, learn_scale: bool = True,
               granularity: str = "channel") -> nn.Module:
    """Register a :class:`FakeQuant` parametrization on every layer named in ``bits`` (in place)."""
    per_channel = check_granularity(granularity) == "channel"
    layers = dict(quantizable_layers(model))
    unknown = sorted(set(bits) - set(layers))
    if unknown:
        raise ValueError(f"plan names layers the model does not have: {', '.join(unknown[:5])}")
    for name, b in bits.items():
        m = layers[name]
        if parametrize.is_parametrized(m, "weight"):
            raise ValueError(f"layer {name} is already quantized")
        parametrize.register_parametrization(m, "weight", FakeQuant(m.weight, b, _out_dim(m), leak, learn_scale,
                                                                  per_channel))
    return model


def bake(model: nn.Module) -> nn.Module:
    """Replace every FakeQuant parametrization by its current output (plain on-grid float weights)."""
    for _, m in model.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


@torch.no_grad()
def export_codes(model: nn.Module) -> dict[str, dict[str, Tensor | int]]:
    """Integer codes (int8/int16) and float32 scales of every parametrized layer."""
    out = {}
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            fq = m.parametrizations.weight[0]
            c = fq.codes(m.parametrizations.weight.original)
            out[name] = {"bits": fq.bits, "codes": c.to(torch.int8 if fq.bits <= 8 else torch.int16),
                         "scale": fq.scale.detach().abs().float().clone()}
    return out


def plan_size_bits(layers: list[LayerInfo], bits: dict[str, int], scale_bits: int = 32,
                   granularity: str = "channel") -> int:
    """Exact stored bits of the quantized layers: weights at their bit-width plus their scales."""
    total = 0
    for li in layers:
        if li.name not in bits:
            raise ValueError(f"no bit-width for layer {li.name}")
        total += li.n_weights * int(bits[li.name]) + n_scales(li, granularity) * scale_bits
    return total


def float_param_bits(model: nn.Module) -> int:
    """32 bits per parameter that FMPQ leaves in float (biases, GDN, entropy bottleneck)."""
    q = {id(m.weight) for _, m in quantizable_layers(model)}
    return 32 * sum(p.numel() for p in model.parameters() if id(p) not in q)
