"""Image quality and rate-distortion metrics: PSNR, MS-SSIM, Bjontegaard deltas.

* :func:`psnr` -- ``10 log10(1 / MSE)`` per image for tensors in [0, 1] (peak 1).
* :func:`ms_ssim` -- multi-scale SSIM (Wang, Simoncelli, Bovik, Asilomar 2003): 11x11 Gaussian window
  (sigma 1.5), K1 = 0.01, K2 = 0.03, 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  2x2 average pooling between scales, contrast-structure terms clipped at 0 (as pytorch-msssim /
  CompressAI do, so that a negative term cannot make the product NaN). Needs min(H, W) > 160.
* :func:`bd_rate` -- average rate difference (percent) of a test curve vs an anchor at equal quality
  (Bjontegaard, VCEG-M33): fit log-rate as a cubic polynomial of PSNR (``method="cubic"``, the common
  implementation) or a piecewise cubic Hermite interpolant (``method="pchip"``, as in later VCEG/JVET
  practice), integrate both over the overlapping PSNR interval, ``100 * (exp(mean diff) - 1)``.
* :func:`bd_psnr` -- average PSNR difference (dB) at equal log-rate, same fits with axes swapped.

A test curve whose rates are the anchor's times ``f`` at the same qualities has BD-rate
``100 (f - 1)`` exactly, with either method:

>>> r = [0.1, 0.2, 0.4, 0.8]; q = [28.0, 31.0, 34.0, 37.0]
>>> round(bd_rate(r, q, [1.1 * x for x in r], q), 6)
10.0
>>> round(bd_psnr(r, q, r, [x + 0.5 for x in q]), 6)
0.5
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mse", "psnr", "ssim", "ms_ssim", "bd_rate", "bd_psnr", "MS_SSIM_WEIGHTS"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"expected [B, C, H, W] tensors, got {x.dim()} dims")


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Per-image mean squared error, shape [B]."""
    _check_pair(x, y)
    return (x.double() - y.double()).pow(2).flatten(1).mean(1)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, shape [B] (inf for identical images).

    >>> import torch
    >>> x = torch.zeros(1, 3, 4, 4); y = x + 0.1
    >>> round(float(psnr(x, y)), 6)
    20.0
    """
    m = mse(x, y)
    return 10 * torch.log10(data_range**2 / m)


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype, device) -> Tensor:
    g = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1)


def _ssim_cs(x: Tensor, y: Tensor, win: Tensor, data_range: float, k1: float, k2: float) -> tuple[Tensor, Tensor]:
    c = x.shape[1]
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def blur(t: Tensor) -> Tensor:  # separable valid-mode Gaussian filter
        t = F.conv2d(t, win, groups=c)
        return F.conv2d(t, win.transpose(2, 3), groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    cs_map = (2 * sxy + c2) / (sxx + syy + c2)
    ssim_map = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)  # [B, C]


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Single-scale SSIM per image (mean over channels), shape [B]."""
    _check_pair(x, y)
    x, y = x.double(), y.double()
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images must be at least {win_size} pixels on each side")
    win = _gaussian_window(win_size, sigma, x.shape[1], x.dtype, x.device)
    s, _ = _ssim_cs(x, y, win, data_range, k1, k2)
    return s.mean(1)


def ms_ssim(x: Tensor, y: Tensor, data_range: float = 1.0, weights: Sequence[float] = MS_SSIM_WEIGHTS,
            win_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Multi-scale SSIM per image, shape [B]; 1 for identical images.

    >>> import torch
    >>> x = torch.rand(1, 3, 176, 176)
    >>> round(float(ms_ssim(x, x)), 6)
    1.0
    """
    _check_pair(x, y)
    levels = len(weights)
    min_side = (win_size - 1) * 2 ** (levels - 1)
    if min(x.shape[-2:]) <= min_side:
        raise ValueError(f"MS-SSIM with {levels} scales needs images larger than {min_side} pixels per side")
    x, y = x.double(), y.double()
    w = torch.tensor(list(weights), dtype=x.dtype, device=x.device)
    win = _gaussian_window(win_size, sigma, x.shape[1], x.dtype, x.device)
    vals = []
    for i in range(levels):
        s, cs = _ssim_cs(x, y, win, data_range, k1, k2)
        if i < levels - 1:
            vals.append(torch.relu(cs))
            pad = [0, x.shape[3] % 2, 0, x.shape[2] % 2]
            x = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 2)
            y = F.avg_pool2d(F.pad(y, pad, mode="replicate"), 2)
    vals.append(torch.relu(s))
    stack = torch.stack(vals, dim=0)  # [levels, B, C]
    return torch.prod(stack ** w.reshape(-1, 1, 1), dim=0).mean(1)


# ------------------------------------------------------------------------------ Bjontegaard --
def _as_curve(rate: Sequence[float], quality: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64).reshape(-1)
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    if r.size != q.size:
        raise ValueError(f"{name}: {r.size} rates but {q.size} quality values")
    if r.size < 4:
        raise ValueError(f"{name}: Bjontegaard deltas need at least 4 points, got {r.size}")
    if np.any(r <= 0) or not np.all(np.isfinite(r)) or not np.all(np.isfinite(q)):
        raise ValueError(f"{name}: rates must be positive and all values finite")
    return r, q


def _pchip_integral(xs: np.ndarray, ys: np.ndarray, lo: float, hi: float) -> float:
    """Integral over [lo, hi] of the monotone piecewise cubic Hermite interpolant (Fritsch-Carlson)."""
    order = np.argsort(xs)
    x, y = xs[order], ys[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError("pchip needs strictly distinct abscissae")
    h = np.diff(x)
    delta = np.diff(y) / h
    n = x.size
    d = np.zeros(n)
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h0, h1, d0, d1):  # SciPy's three-point end condition
        dd = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(dd) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(dd) > abs(3 * d0):
            return 3 * d0
        return dd

    d[0] = end(h[0], h[1], delta[0], delta[1]) if n > 2 else delta[0]
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2]) if n > 2 else delta[-1]
    total = 0.0
    for k in range(n - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        # Hermite cubic on [x_k, x_k+1] in t = (s - x_k)/h: integrate analytically via 4-point Gauss
        gx, gw = np.polynomial.legendre.leggauss(4)
        s = (b - a) / 2 * gx + (a + b) / 2
        t = (s - x[k]) / h[k]
        h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
        h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
        f = h00 * y[k] + h10 * h[k] * d[k] + h01 * y[k + 1] + h11 * h[k] * d[k + 1]
        total += float((b - a) / 2 * np.sum(gw * f))
    return total


def _avg_diff(xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray, method: str) -> float:
    lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
    if hi <= lo:
        raise ValueError("the two curves do not overlap on the integration axis")
    if method == "cubic":
        pa, pt = np.polyint(np.polyfit(xa, ya, 3)), np.polyint(np.polyfit(xt, yt, 3))
        ia = np.polyval(pa, hi) - np.polyval(pa, lo)
        it = np.polyval(pt, hi) - np.polyval(pt, lo)
    elif method == "pchip":
        ia, it = _pchip_integral(xa, ya, lo, hi), _pchip_integral(xt, yt, lo, hi)
    else:
        raise ValueError(f"method must be 'cubic' or 'pchip', got {method!r}")
    return (it - ia) / (hi - lo)


def bd_rate(rate_anchor: Sequence[float], psnr_anchor: Sequence[float], rate_test: Sequence[float],
            psnr_test: Sequence[float], method: str = "cubic") -> float:
    """Bjontegaard delta rate in percent (negative = the test codec needs fewer bits)."""
    ra, qa = _as_curve(rate_anchor, psnr_anchor, "anchor")
    rt, qt = _as_curve(rate_test, psnr_test, "test")
    d = _avg_diff(qa, np.log(ra), qt, np.log(rt), method)
    return float((math.exp(d) - 1) * 100)


def bd_psnr(rate_anchor: Sequence[float], psnr_anchor: Sequence[float], rate_test: Sequence[float],
            psnr_test: Sequence[float], method: str = "cubic") -> float:
    """Bjontegaard delta PSNR in dB (positive = the test codec is better at equal rate)."""
    ra, qa = _as_curve(rate_anchor, psnr_anchor, "anchor")
    rt, qt = _as_curve(rate_test, psnr_test, "test")
    return float(_avg_diff(np.log(ra), qa, np.log(rt), qt, method))
