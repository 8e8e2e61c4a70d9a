"""Activation fake-quantization of a codec: the input of every quantized layer at ``b`` bits.

An integer conv engine multiplies integer weights with integer inputs, so W8A8 (or WbA8) deployment
quantizes each conv / deconv / linear layer's *input* as well. :func:`apply_act_quant` attaches an
:class:`ActQuant` to every layer of a plan (as the child module ``input_quant`` plus a forward
pre-hook), with one scale per layer::

    lo = 0 (input never negative on the calibration batch) or -(2^(b-1) - 1), hi = 2^b - 1 or 2^(b-1) - 1
    x_hat = clamp(round(x / s), lo, hi) * s          s = max|x| / hi on the calibration batch (1 / hi if it is all zero)

then trained with the weights in QAT (LSQ-style: the straight-through rounding passes the gradient
to ``s`` through ``x / s`` and ``* s``; the clip is the same leaky clip as the weights'). ``s`` is
stored as ``log_scale`` ([I] so that an Adam step is a relative change and the scale never crosses
zero; QAT gives it its own learning rate, ``QATConfig.act_lr``). [I] The FMPQ
summaries only describe weight bit allocation; which activations a deployment quantizes is not
public. megabit's choice: every quantized layer's input (GDN/IGDN and the entropy models' internals
stay float), absmax calibration, one float32 scale and lower level per layer, stored in the packed
file like the other float parameters.

>>> import torch
>>> aq = ActQuant(8)
>>> aq.calibrate_from(torch.tensor([0.0, 0.5, 2.0]))
>>> (aq(torch.tensor([0.5, 3.0, -1.0])) / aq.scale).round().tolist()   # levels 0..255, clipped at both ends
[64.0, 255.0, 0.0]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from megabit.quant import clamp_leaky, round_ste

from .quantize import MAX_BITS, MIN_BITS, quantizable_layers

__all__ = ["ActQuant", "apply_act_quant", "calibrate_act_quant", "act_quant_modules"]

ATTR = "input_quant"


def check_act_bits(bits) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"activation bit-width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return int(bits)


class ActQuant(nn.Module):
    """One layer-input quantizer: ``log_scale`` (trained) and ``qmin`` (0 or the negative top level; a
    parameter without gradient, so it is stored with the model and in the packed file)."""

    def __init__(self, bits: int, leak: float = 0.0):
        super().__init__()
        self.bits = check_act_bits(bits)
        self.leak = float(leak)
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.qmin = nn.Parameter(torch.zeros(1), requires_grad=False)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1 if float(self.qmin) >= 0 else 2 ** (self.bits - 1) - 1

    @torch.no_grad()
    def calibrate_from(self, x: Tensor) -> None:
        """Set the lower level and the absmax scale from a calibration tensor."""
        signed = bool((x < 0).any())
        self.qmin.fill_(-(2 ** (self.bits - 1) - 1) if signed else 0)
        m = float(x.abs().max())
        self.log_scale.fill_(math.log((m if m > 0 else 1.0) / self.qmax))  # [I] an all-zero calibration input: range +-1

    def forward(self, x: Tensor) -> Tensor:
        s = self.scale.to(x.dtype)
        return clamp_leaky(round_ste(x / s), float(self.qmin), float(self.qmax), self.leak) * s

    def extra_repr(self) -> str:
        return f"bits={self.bits}, qmin={int(self.qmin)}, leak={self.leak}"


def _quant_input(module: nn.Module, args: tuple) -> tuple:
    return (getattr(module, ATTR)(args[0]), *args[1:])


def apply_act_quant(model: nn.Module, names, bits: int, leak: float = 0.0) -> nn.Module:
    """Attach an :class:`ActQuant` (child ``input_quant`` + forward pre-hook) to each named layer (in
    place); scales start at 1 until :func:`calibrate_act_quant` or a loaded state_dict sets them."""
    bits = check_act_bits(bits)
    layers = dict(quantizable_layers(model))
    for name in names:
        if name not in layers:
            raise ValueError(f"no quantizable layer {name!r} for activation quantization")
        m = layers[name]
        if hasattr(m, ATTR):
            raise ValueError(f"layer {name} already quantizes its input")
        m.add_module(ATTR, ActQuant(bits, leak))
        m.register_forward_pre_hook(_quant_input)
    return model


def act_quant_modules(model: nn.Module) -> dict[str, ActQuant]:
    return {n: getattr(m, ATTR) for n, m in model.named_modules() if isinstance(getattr(m, ATTR, None), ActQuant)}


@torch.no_grad()
def calibrate_act_quant(model: nn.Module, x: Tensor) -> dict[str, dict]:
    """One forward pass over the calibration batch ``x``: every :class:`ActQuant` takes its lower level
    and scale from the float input it sees (layers in forward order, each calibrated on the output of
    the already-quantized layers before it). Returns ``{layer: {"scale", "qmin"}}``."""
    aqs = act_quant_modules(model)
    if not aqs:
        raise ValueError("the model has no activation quantizers (apply_act_quant first)")
    seen: set[str] = set()
    hooks = []
    for name, aq in aqs.items():
        def pre(module, args, name=name, aq=aq):
            if name not in seen:
                aq.calibrate_from(args[0])
                seen.add(name)
        hooks.append(model.get_submodule(name).register_forward_pre_hook(pre, prepend=True))
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    missing = sorted(set(aqs) - seen)
    if missing:  # layers the plain forward does not run (none in megabit's codecs): keep their range from x
        raise ValueError(f"calibration forward did not reach layers {', '.join(missing[:4])}")
    return {n: {"scale": float(a.scale), "qmin": int(a.qmin)} for n, a in aqs.items()}
