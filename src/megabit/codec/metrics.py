"""Image quality metrics for the codec evaluation: PSNR, MS-SSIM, blockiness.

Thin numpy-image wrappers: MS-SSIM is :func:`megabit.metrics.ms_ssim` (the project's shared
implementation) whenever the image is large enough for 5 scales; smaller images (tests, tiny
inputs) fall back to the local implementation below with fewer scales. Both agree to ~1e-5.

* ``psnr``: RGB, 8-bit peak, ``10 log10(255^2 / MSE)`` over all pixels and channels.
* ``ms_ssim``: Wang et al. 2003, 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  11-tap Gaussian (sigma 1.5), valid filtering, 2x2 average pooling, per channel then averaged;
  same conventions as ``pytorch_msssim`` (used by CompressAI's published numbers). Images too
  small for 5 scales use as many as fit, with the weights renormalized.
* ``blockiness``: mean squared difference between adjacent pixels across the 32-pixel patch seams
  divided by the same quantity everywhere else (both directions, all channels). 1.0 = the seams
  are no sharper than the image interior; independent patch decoding gives clearly > 1.

>>> import numpy as np
>>> a = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
>>> psnr(a, a), round(ms_ssim(a, a), 6)
(inf, 1.0)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ms_ssim", "ms_ssim_torch", "blockiness", "MS_SSIM_WEIGHTS"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _f64(a) -> torch.Tensor:
    t = torch.from_numpy(np.array(a, dtype=np.float64))
    if t.ndim == 2:
        t = t[:, :, None]
    return t.permute(2, 0, 1)[None]  # [1, C, H, W]


def psnr(a, b, peak: float = 255.0) -> float:
    mse = float(((_f64(a) - _f64(b)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filt(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    x = F.conv2d(x, g.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, peak: float, g: torch.Tensor):
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mx, my = _filt(x, g), _filt(y, g)
    sxx = _filt(x * x, g) - mx * mx
    syy = _filt(y * y, g) - my * my
    sxy = _filt(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * cs
    return ssim.flatten(2).mean(-1), cs.flatten(2).mean(-1)  # [N, C]


def ms_ssim(a, b, peak: float = 255.0) -> float:
    """MS-SSIM of two HxW[xC] images (uint8 or float on 0..peak)."""
    x, y = _f64(a), _f64(b)
    if min(x.shape[2], x.shape[3]) > 160:
        from .. import metrics as shared

        return float(shared.ms_ssim(x / peak, y / peak)[0])
    return float(ms_ssim_torch(x, y, peak, eps=0.0).mean())


def ms_ssim_torch(x: torch.Tensor, y: torch.Tensor, peak: float = 255.0, eps: float = 1e-6) -> torch.Tensor:
    """Differentiable MS-SSIM of NCHW batches -> [N] (the training loss of the MS-SSIM codec variant).

    As many scales as the size allows (weights renormalized); the contrast terms are clamped at
    ``eps`` instead of 0 so that their fractional powers keep a finite gradient.
    """
    g = _gauss().to(x.dtype)
    smallest = min(x.shape[2], x.shape[3])
    levels = 5
    while levels > 1 and smallest < 11 * 2 ** (levels - 1):
        levels -= 1
    if smallest < 11:
        raise ValueError(f"image too small for MS-SSIM ({smallest} px < 11)")
    w = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=x.dtype)
    w = w / w.sum()
    mcs = []
    for i in range(levels):
        ssim, cs = _ssim_cs(x, y, peak, g)
        if i < levels - 1:
            mcs.append(cs.clamp_min(eps))
            pad = (0, x.shape[3] % 2, 0, x.shape[2] % 2)
            x, y = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 2), F.avg_pool2d(F.pad(y, pad, mode="replicate"), 2)
    vals = torch.stack(mcs + [ssim.clamp_min(eps)], 0)  # [L, N, C]
    return torch.prod(vals ** w.reshape(-1, 1, 1), 0).mean(-1)


def blockiness(img, patch: int = 32) -> float:
    """Seam-to-interior ratio of squared neighbour differences (see module docstring)."""
    x = _f64(img)[0]
    dh = (x[:, :, 1:] - x[:, :, :-1]) ** 2  # between column j and j+1
    dv = (x[:, 1:, :] - x[:, :-1, :]) ** 2
    seam_h = (torch.arange(dh.shape[2]) + 1) % patch == 0
    seam_v = (torch.arange(dv.shape[1]) + 1) % patch == 0
    seam = dh[:, :, seam_h].sum() + dv[:, seam_v, :].sum()
    n_seam = dh[:, :, seam_h].numel() + dv[:, seam_v, :].numel()
    inner = dh[:, :, ~seam_h].sum() + dv[:, ~seam_v, :].sum()
    n_inner = dh[:, :, ~seam_h].numel() + dv[:, ~seam_v, :].numel()
    if n_seam == 0 or n_inner == 0:
        return 1.0
    si, ii = float(seam) / n_seam, float(inner) / n_inner
    return si / ii if ii > 0 else (1.0 if si == 0 else math.inf)
