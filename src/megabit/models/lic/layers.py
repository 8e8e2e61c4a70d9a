"""Layers of learned image codecs, parametrized exactly as CompressAI's (same state_dict names).

* :class:`LowerBound` -- ``max(x, bound)`` whose gradient passes when ``x >= bound`` or the
  gradient pushes ``x`` up (CompressAI ``compressai/ops/bound_ops.py``); buffer ``bound``.
* :class:`NonNegativeParametrizer` -- ``p = max(v, sqrt(min + o^2))^2 - o^2`` with ``o = 2^-18``;
  buffers ``pedestal`` and ``lower_bound.bound``.
* :class:`GDN` -- generalized divisive normalization (Balle et al., ICLR 2016)::

      y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)      (IGDN: multiply by the sqrt)

  parameters ``beta`` [C] and ``gamma`` [C, C] stored re-parametrized (``beta_reparam``,
  ``gamma_reparam``), as in ``compressai/layers/gdn.py``.
* ``conv``/``deconv`` (5x5, stride 2), ``conv3x3``, ``conv1x1``, ``subpel_conv3x3``,
  :class:`ResidualBlock`, :class:`ResidualBlockWithStride`, :class:`ResidualBlockUpsample`,
  :class:`MaskedConv2d` (PixelCNN mask "A"/"B", buffer ``mask``).

>>> import torch
>>> g = GDN(4)
>>> x = torch.randn(1, 4, 3, 3)
>>> bool(torch.allclose(GDN(4, inverse=True)(g(x)), x, atol=0.2))  # identity-ish at init
True
>>> sorted(k for k in g.state_dict())
['beta', 'beta_reparam.lower_bound.bound', 'beta_reparam.pedestal', 'gamma', 'gamma_reparam.lower_bound.bound', 'gamma_reparam.pedestal']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LowerBound",
    "NonNegativeParametrizer",
    "GDN",
    "conv",
    "deconv",
    "conv3x3",
    "conv1x1",
    "subpel_conv3x3",
    "ResidualBlock",
    "ResidualBlockWithStride",
    "ResidualBlockUpsample",
    "MaskedConv2d",
]


class _LowerBoundFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bound):  # type: ignore[override]
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, bound = ctx.saved_tensors
        pass_through = (x >= bound) | (g < 0)
        return pass_through.to(g.dtype) * g, None


class LowerBound(nn.Module):
    """``max(x, bound)`` with a gradient that lets ``x`` climb back above the bound."""

    bound: Tensor

    def __init__(self, bound: float | Tensor):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        return _LowerBoundFn.apply(x, self.bound.to(x.dtype))


class NonNegativeParametrizer(nn.Module):
    """Store ``v = sqrt(p + o^2)`` for a non-negative parameter ``p`` (CompressAI's reparam)."""

    pedestal: Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = 2**-18):
        super().__init__()
        self.minimum = float(minimum)
        self.reparam_offset = float(reparam_offset)
        self.register_buffer("pedestal", torch.tensor([self.reparam_offset**2]))
        self.lower_bound = LowerBound((self.minimum + self.reparam_offset**2) ** 0.5)

    def init(self, x: Tensor) -> Tensor:
        return torch.sqrt(torch.max(x + self.pedestal, self.pedestal))

    def forward(self, x: Tensor) -> Tensor:
        return self.lower_bound(x) ** 2 - self.pedestal


class GDN(nn.Module):
    """Generalized divisive normalization (Balle, Laparra, Simoncelli, ICLR 2016); ``inverse=True`` is IGDN."""

    def __init__(self, in_channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_reparam = NonNegativeParametrizer(minimum=float(beta_min))
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(in_channels)))
        self.gamma_reparam = NonNegativeParametrizer()
        self.gamma = nn.Parameter(self.gamma_reparam.init(float(gamma_init) * torch.eye(in_channels)))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(c, c, 1, 1)
        norm = F.conv2d(x * x, gamma.to(x.dtype), beta.to(x.dtype))
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        in_channels, out_channels, kernel_size, stride=stride, output_padding=stride - 1, padding=kernel_size // 2
    )


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride)


def subpel_conv3x3(in_ch: int, out_ch: int, r: int = 1) -> nn.Sequential:
    """3x3 conv to ``out_ch * r^2`` channels, then pixel shuffle (x r upsampling)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch * r**2, kernel_size=3, padding=1), nn.PixelShuffle(r))


class ResidualBlockWithStride(nn.Module):
    """conv3x3(stride) -> LeakyReLU -> conv3x3 -> GDN, plus a 1x1 (strided) skip."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride=stride)
        self.leaky_relu = nn.LeakyReLU(inplace=True)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.gdn = GDN(out_ch)
        self.skip = conv1x1(in_ch, out_ch, stride=stride) if stride != 1 or in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.gdn(self.conv2(self.leaky_relu(self.conv1(x))))
        return out + (self.skip(x) if self.skip is not None else x)


class ResidualBlockUpsample(nn.Module):
    """subpel conv (x r) -> LeakyReLU -> conv3x3 -> IGDN, plus a subpel-conv skip."""

    def __init__(self, in_ch: int, out_ch: int, upsample: int = 2):
        super().__init__()
        self.subpel_conv = subpel_conv3x3(in_ch, out_ch, upsample)
        self.leaky_relu = nn.LeakyReLU(inplace=True)
        self.conv = conv3x3(out_ch, out_ch)
        self.igdn = GDN(out_ch, inverse=True)
        self.upsample = subpel_conv3x3(in_ch, out_ch, upsample)

    def forward(self, x: Tensor) -> Tensor:
        out = self.igdn(self.conv(self.leaky_relu(self.subpel_conv(x))))
        return out + self.upsample(x)


class ResidualBlock(nn.Module):
    """conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU, plus identity (or 1x1) skip."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch)
        self.leaky_relu = nn.LeakyReLU(inplace=True)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.skip = conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        identity = self.skip(x) if self.skip is not None else x
        out = self.leaky_relu(self.conv2(self.leaky_relu(self.conv1(x))))
        return out + identity


class MaskedConv2d(nn.Conv2d):
    """Causal (PixelCNN) convolution: mask "A" hides the centre and everything after it in raster order.

    The mask is applied to the weight on every call (not written into ``weight`` in place, unlike
    CompressAI, so that a fake-quantizing parametrization of ``weight`` keeps working).
    """

    mask: Tensor

    def __init__(self, *args, mask_type: str = "A", **kwargs):
        super().__init__(*args, **kwargs)
        if mask_type not in ("A", "B"):
            raise ValueError(f'invalid mask type "{mask_type}"')
        self.register_buffer("mask", torch.ones_like(self.weight.data))
        _, _, h, w = self.mask.size()
        self.mask[:, :, h // 2, w // 2 + (mask_type == "B"):] = 0
        self.mask[:, :, h // 2 + 1:] = 0

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask.to(self.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)
