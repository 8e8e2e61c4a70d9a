"""Integer-only inference of a BSN-mode NQE network (the reference the C runtime matches).

Every tensor is an integer tensor (int8 weights, int32 activations/accumulators, int64 logits):

    x0      = pixel − 128                                     (int, −128..127)
    acc     = Σ W·x   (integer conv, groups)                  (int32)
    u       = (acc + o_c) >> (k − 2)       (k < 2: << (2 − k)) (arithmetic shift = floor)
    x_next  = clamp(u, 0, 3)   then 2x2 max-pool if the layer has one
    logits  = W_head · Σ_hw x + b                             (int64)

With a BSN mantissa or per-channel shifts ([I] beyond the paper, ``NQEConfig.bsn_granularity`` /
``bsn_mantissa_bits`` B): ``u = (acc · M_c + o_c) >> (k_c + B − 2)``, ``M_c = 2^B + m_c``.

``u`` equals ``floor(4 · (acc + o_c) · 2^-k)``, i.e. HWMSB of the BSN output, so the integer
network reproduces the fake-quantized PyTorch model exactly (tested over the CIFAR-10 test set).
The convolution is an integer im2col + int32 matmul (no float anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.nqe import NQE, NQEConfig

__all__ = ["IntLayer", "IntHead", "IntegerNQE", "IntegerPatchEncoder", "apply_int_layer", "apply_int_head", "apply_int_code"]


@dataclass
class IntLayer:
    codes: np.ndarray  # int8 [Cout, Cin/groups, k, k]
    levels: int
    groups: int
    pool: bool
    shift: int | np.ndarray  # one shift, or int64 [Cout] (per-channel BSN)
    offsets: np.ndarray  # int64 [Cout]
    mant: int | np.ndarray = 0  # BSN mantissa m (one, or int64 [Cout]); multiplier M = 2^B + m
    mantissa_bits: int = 0  # B

    @property
    def per_channel(self) -> bool:
        return np.ndim(self.shift) > 0

    @property
    def multipliers(self) -> np.ndarray:
        """``M_c = 2^B + m_c`` per output channel (all 1 for the paper's BSN), int64 [Cout]."""
        return np.broadcast_to(np.asarray(self.mant, np.int64) + (1 << self.mantissa_bits), self.offsets.shape).copy()

    @property
    def kernel(self) -> int:
        return int(self.codes.shape[-1])


@dataclass
class IntHead:
    codes: np.ndarray  # int8 [classes, C]
    levels: int
    bias: np.ndarray  # int64 [classes]


def _int_conv(x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """Integer 'same' convolution by im2col (slicing) and int32 matmul. x: int32 NCHW, w: int32."""
    n, c, h, wd = x.shape
    cout, cg, k, _ = w.shape
    p = k // 2
    xp = F.pad(x, (p, p, p, p)) if p else x
    cols = torch.stack([xp[:, :, dy : dy + h, dx : dx + wd] for dy in range(k) for dx in range(k)], 2)
    # cols: [N, C, k*k, H, W] -> [N, G, cg*k*k, H*W]
    cols = cols.reshape(n, groups, cg * k * k, h * wd)
    wm = w.reshape(groups, cout // groups, cg * k * k)
    acc = torch.matmul(wm.unsqueeze(0), cols)  # [N, G, og, H*W]
    return acc.reshape(n, cout, h, wd)


@torch.no_grad()
def int_layer_of(block) -> IntLayer:
    """The integer form of a BSN-mode :class:`~megabit.models.nqe.QConvBlock`."""
    n = block.norm
    per_channel = getattr(n, "per_channel", False)
    shift = n.shift.numpy().astype(np.int64) if per_channel else int(n.shift)
    mant = n.mant.numpy().astype(np.int64) if per_channel else int(getattr(n, "mant", 0))
    return IntLayer(codes=block.weight_codes().round().to(torch.int8).numpy(), levels=block.spec.levels,
                    groups=block.spec.groups, pool=block.spec.pool, shift=shift,
                    offsets=n.int_offsets().numpy(), mant=mant, mantissa_bits=getattr(n, "mantissa_bits", 0))


def apply_int_layer(a: torch.Tensor, L: IntLayer, act_bits: int) -> torch.Tensor:
    """One integer conv block: conv, + offset, shift, clamp to the HWMSB codes, optional 2x2 max-pool."""
    acc = _int_conv(a, torch.from_numpy(L.codes).to(torch.int32), L.groups)
    if L.mantissa_bits:  # acc * M, M = 2^B + m: a shift-and-add
        acc = acc * torch.as_tensor(L.multipliers, dtype=torch.int32).reshape(1, -1, 1, 1)
    acc = acc + torch.from_numpy(L.offsets).to(torch.int32).reshape(1, -1, 1, 1)
    if L.per_channel:
        s = torch.as_tensor(np.asarray(L.shift) + L.mantissa_bits - act_bits, dtype=torch.int32).reshape(1, -1, 1, 1)
        u = torch.where(s >= 0, torch.bitwise_right_shift(acc, s.clamp(min=0)),
                        torch.bitwise_left_shift(acc, (-s).clamp(min=0)))
    else:
        s = int(L.shift) + L.mantissa_bits - act_bits  # floor(2^bits * y): shift by k + B - bits
        u = torch.bitwise_right_shift(acc, s) if s >= 0 else torch.bitwise_left_shift(acc, -s)
    a = u.clamp(0, (1 << act_bits) - 1)
    if L.pool:
        n, c, hh, ww = a.shape
        a = a[:, :, : hh // 2 * 2, : ww // 2 * 2].reshape(n, c, hh // 2, 2, ww // 2, 2).amax((3, 5))
    return a


def run_int_layers(x: torch.Tensor, layers: list[IntLayer], act_bits: int) -> torch.Tensor:
    """uint8 images -> the int32 activation codes after the conv blocks (input = pixel - 128)."""
    if x.dtype != torch.uint8:
        raise ValueError(f"integer inference takes uint8 images, got {x.dtype}")
    a = x.to(torch.int32) - 128
    for L in layers:
        a = apply_int_layer(a, L, act_bits)
    return a


def apply_int_head(a: torch.Tensor, H: IntHead) -> torch.Tensor:
    """Global sum-pool then the integer linear layer: int64 logits."""
    s = a.to(torch.int64).sum((2, 3))
    return s @ torch.from_numpy(H.codes).to(torch.int64).T + torch.from_numpy(H.bias)


class IntegerNQE:
    """Integer-only executable form of a BSN-mode NQE (see module docstring)."""

    def __init__(self, cfg: NQEConfig, layers: list[IntLayer], head: IntHead):
        self.cfg, self.layers, self.head = cfg, layers, head

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: NQE) -> "IntegerNQE":
        if model.cfg.norm != "bsn" or not model.cfg.quantize:
            raise ValueError("integer inference needs a quantized model in BSN mode (train phase 2 first)")
        if model.cfg.act_mode != "floor":
            raise ValueError("integer inference implements HWMSB with floor (act_mode='floor')")
        model.eval()
        layers = [int_layer_of(b) for b in model.blocks]
        h = model.head
        head = IntHead(h.quant.codes(h.weight).round().to(torch.int8).numpy(), model.cfg.head_levels, h.int_bias().numpy())
        return cls(model.cfg, layers, head)

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 NCHW images -> int64 logits."""
        x = torch.as_tensor(x)
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected NCHW images with {self.cfg.in_channels} channels, got shape {tuple(x.shape)}")
        return apply_int_head(run_int_layers(x, self.layers, self.cfg.act_bits), self.head)

    __call__ = forward

    def predict(self, x: torch.Tensor, tta: bool | int = True, batch_size: int = 250) -> torch.Tensor:
        """Integer logits summed over the test-time views of ``tta`` (``megabit.data.cifar.TTA_LEVELS``;
        True = 1 = horizontal flip): still integers."""
        from ..data.cifar import tta_views

        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            out.append(sum(self.forward(v) for v in tta_views(xb, tta)))
        return torch.cat(out)


# ------------------------------------------------------------------- patch encoder ---


def apply_int_code(a: torch.Tensor, L: IntLayer) -> torch.Tensor:
    """The patch encoder's code layer: 1x1 integer conv, + offset, bit = (acc + o_c >= 0) (uint8 0/1).

    ``sign((acc + o_c) * 2^-k) = sign(acc + o_c)``: the shift does not change the sign, so the
    code layer needs no shift at inference (it is stored for completeness).
    """
    acc = _int_conv(a, torch.from_numpy(L.codes).to(torch.int32), L.groups)
    acc = acc + torch.from_numpy(L.offsets).to(torch.int32).reshape(1, -1, 1, 1)
    return (acc >= 0).to(torch.uint8)


class IntegerPatchEncoder:
    """Integer-only NQE patch encoder: uint8 32x32 patches -> code bits, the same bits as
    :meth:`megabit.models.patch_codec.PatchCodec.compress` (BSN mode)."""

    def __init__(self, cfg, layers: list[IntLayer], code: IntLayer):
        self.cfg, self.layers, self.code = cfg, layers, code  # cfg: PatchCodecConfig

    @classmethod
    @torch.no_grad()
    def from_model(cls, model) -> "IntegerPatchEncoder":
        enc = getattr(model, "g_a", model)
        cfg = enc.cfg
        if cfg.norm != "bsn" or not cfg.quantize:
            raise ValueError("integer inference needs a quantized patch encoder in BSN mode")
        if cfg.act_mode != "floor":
            raise ValueError("integer inference implements HWMSB with floor (act_mode='floor')")
        enc.eval()
        layers = [int_layer_of(b) for b in enc.blocks]
        c = enc.code
        code = IntLayer(codes=c.quant.codes(c.weight).round().to(torch.int8).numpy(), levels=cfg.code_levels,
                        groups=1, pool=False, shift=int(c.norm.shift), offsets=c.norm.int_offsets().numpy())
        return cls(cfg, layers, code)

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 patches [N, 3, 32, 32] -> bits uint8 [N, code_channels, g, g] (1 = code +1)."""
        x = torch.as_tensor(x)
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            raise ValueError(f"expected uint8 patches [N, 3, 32, 32], got shape {tuple(x.shape)}")
        return apply_int_code(run_int_layers(x, self.layers, self.cfg.act_bits), self.code)

    __call__ = forward

    def compress(self, x: torch.Tensor | np.ndarray, rate_bits: int) -> torch.Tensor:
        """[1, 3, H, W] uint8 (H, W multiples of 32) -> bits uint8 [gh*gw, rate_bits], like ``PatchCodec.compress``."""
        from ..models.patch_codec import patchify

        k = self.cfg.channels_for(rate_bits)
        x = torch.as_tensor(x)
        bits = self.forward(patchify(x))[:, :k]
        return bits.reshape(bits.shape[0], -1)
