"""Adaptive rate with rate control (beyond the paper): a rate per patch, chosen for a target file size.

The nested code makes every patch's 128-bit code a prefix of its 256- and 512-bit ones, so one
encoder pass at the largest rate gives every rate of every patch. A sender that wants a file of
``bpp`` bits per pixel then picks, per patch, the rate that spends the bits where they lower the
error most (flat sky gets 128 bits, texture 512), as JPEG's and AVIF's adaptive quantisation do:

1. :func:`patch_costs` decodes the frame at each of the model's rates (PURENET, refinement
   included) and measures every patch's squared error ``D[l, p]`` against the source (pixels
   inside the image only) and its cost ``R[l, p]`` in bits (the context model's code length of the
   patch when the file will be context coded, else the nominal rate);
2. :func:`choose_levels` minimises ``sum_p D[l_p, p] + lambda * R[l_p, p]`` per patch and bisects
   ``lambda`` so that the estimated bits meet the budget (Lagrangian allocation, as in
   rate-distortion optimised coders);
3. :meth:`AdaptiveCoder.code` writes the file, measures its real size, and corrects the budget by
   the ratio of real to estimated size (a few rounds) so the file lands at or under the target.
   A file whose patches all get the same rate is written as an ordinary fixed-rate file (no map).

[I] our choices: the distortion of a rate is measured with *every* patch at that rate (the
neighbours' rates change the refinement's view of a seam a little); the rate estimate uses the
uniform-rate code map, while the file codes the mixed map (bits not sent are 0 in every later
bit's context, the fixed-rate context model is reused as is); the refinement gets the mean of the
patch rates (a per-patch map, which training never showed it, gave more visible seams:
:func:`megabit.codec.api.reconstruct`). The cost: one encode at the largest rate plus one
frame decode per rate, on the sender; the decoder does one decode as for any file.

>>> import numpy as np
>>> D = np.array([[9.0, 4.0], [5.0, 3.5], [1.0, 3.0]])   # 3 rates x 2 patches
>>> R = np.array([[128, 128], [256, 256], [512, 512]], float)
>>> choose_levels(D, R, budget_bits=640).tolist()        # the first patch gains more per bit
[2, 0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..fmt.mbc import HEADER, LEVEL_BITS
from ..models.patch_codec import PATCH, patchify

if TYPE_CHECKING:
    from .api import Codec

__all__ = ["check_bpp", "patch_costs", "choose_levels", "AdaptiveCoder", "compress_adaptive"]


def check_bpp(bpp) -> float:
    """``bpp`` as a float; ValueError (one line) unless it is a finite positive number."""
    try:
        v = float(bpp)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"target bpp must be a positive number, got {bpp!r}")
    return v


def choose_levels(D: np.ndarray, R: np.ndarray, budget_bits: float, iters: int = 60) -> np.ndarray:
    """Level index per patch (``D``, ``R``: [L, P]) minimising ``sum D`` with ``sum R <= budget_bits``
    along the Lagrangian path; the cheapest level everywhere if even that is over the budget."""
    D, R = np.asarray(D, np.float64), np.asarray(R, np.float64)
    if D.shape != R.shape or D.ndim != 2 or D.shape[0] < 1:
        raise ValueError(f"D and R must both be [levels, patches], got {D.shape} and {R.shape}")
    cols = np.arange(D.shape[1])

    def pick(lam: float) -> np.ndarray:
        return np.argmin(D + lam * R, 0)

    best = pick(0.0)
    if R[best, cols].sum() <= budget_bits:
        return best
    lo, hi = -12.0, 12.0  # log10 lambda; D is squared error on 0..255, R in bits
    if R[pick(10.0**hi), cols].sum() > budget_bits:
        return np.argmin(R, 0)
    for _ in range(iters):  # the smallest lambda whose estimate fits
        mid = 0.5 * (lo + hi)
        if R[pick(10.0**mid), cols].sum() <= budget_bits:
            hi = mid
        else:
            lo = mid
    return pick(10.0**hi)


@torch.no_grad()
def patch_costs(codec: "Codec", src: np.ndarray, bits: dict[int, np.ndarray], gh: int, gw: int,
                context_rate: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each rate ``r`` of ``bits`` (``{r: [P, r] code bits}``, ascending): ``D[l, p]``, the squared
    error (sum over the patch's pixels inside the image, RGB, 0..255) of patch ``p`` decoded with
    every patch at that rate; ``R[l, p]``: its bits (context-model code length if ``context_rate``,
    else the rate)."""
    from ..data.images import pad_to_multiple
    from .api import _to_tensor, reconstruct

    h, w = src.shape[:2]
    ref = _to_tensor(pad_to_multiple(src, PATCH))  # the padding is masked out below
    inside = torch.zeros(1, 1, gh * PATCH, gw * PATCH)
    inside[..., :h, :w] = 1
    D, R = [], []
    for r, b in sorted(bits.items()):
        out = reconstruct(b, gh, gw, r, codec).round().clamp(0, 255)
        D.append(patchify((out - ref) ** 2 * inside).sum((1, 2, 3)).double().numpy())
        if context_rate:
            k = r // 16
            codes = torch.from_numpy(b.astype(np.float32) * 2 - 1).reshape(-1, k, 4, 4)
            R.append(codec.ctx.rate_fn(gh, gw)(codes).double().numpy())
        else:
            R.append(np.full(gh * gw, float(r)))
    return np.stack(D), np.stack(R)


@dataclass
class AdaptiveCoder:
    """One image's encoder bits and per-patch costs: :meth:`code` makes files for any target bpp
    without encoding or decoding the image again (what :func:`compress_adaptive` does once)."""

    codec: "Codec"
    bits: dict  # rate -> code bits [P, rate] (prefixes of one code, or each rate's own searched code)
    D: np.ndarray  # [L, P]
    R: np.ndarray  # [L, P]
    rates: tuple[int, ...]
    gh: int
    gw: int
    width: int
    height: int
    channels: int
    entropy: str

    @classmethod
    def prepare(cls, src: np.ndarray, codec: "Codec", channels: int = 3, entropy: str = "auto",
                search=None, progress: bool = False) -> "AdaptiveCoder":
        """``search``: encoder-side code search (:mod:`megabit.codec.search`) run at every rate on its
        own (a patch's bits at one rate need not be a prefix of its bits at another: each patch is
        sent at one rate), so the allocation chooses among searched codes."""
        from .api import _to_tensor, encode_bits_of
        from .search import search_bits
        from ..data.images import pad_to_multiple

        if entropy not in ("auto", "raw", "ctx"):
            raise ValueError(f"an adaptive-rate file is coded raw or with the context model, not {entropy!r}")
        if entropy == "ctx" and codec.ctx is None:
            raise ValueError(f"model {codec.name} has no context model (entropy 'ctx'); use auto or raw")
        rates = tuple(sorted(codec.model.cfg.rates))
        if len(rates) > 1 << LEVEL_BITS:
            raise ValueError(f"the rate map holds at most {1 << LEVEL_BITS} rates; model {codec.name} has {len(rates)}")
        enc, gh, gw = encode_bits_of(src, codec, rates[-1])
        bits = {r: np.ascontiguousarray(enc[:, :r]) for r in rates}
        if search:
            x = _to_tensor(pad_to_multiple(src, PATCH))
            bits = {r: search_bits(codec, x, b, r, search, progress) for r, b in bits.items()}
        D, R = patch_costs(codec, src, bits, gh, gw, codec.ctx is not None and entropy != "raw")
        return cls(codec, bits, D, R, rates, gh, gw, src.shape[1], src.shape[0], channels, entropy)

    def code(self, bpp: float, rounds: int = 4) -> bytes:
        """The lowest-error file of at most ``bpp`` bits per pixel found in ``rounds`` size corrections;
        if the cheapest rate everywhere is over the target, that file (the smallest the model makes)."""
        from .api import coded_files

        bpp = check_bpp(bpp)
        P = self.gh * self.gw
        cols = np.arange(P)
        target = bpp * self.width * self.height
        budget = target - 8 * (HEADER.size + 4 + (P * LEVEL_BITS + 7) // 8)
        best, data = None, b""
        for _ in range(rounds):
            lv = choose_levels(self.D, self.R, budget)
            pr = np.asarray(self.rates)[lv]
            same = bool((pr == pr[0]).all())  # one rate everywhere: an ordinary fixed-rate file, no rate map
            files = coded_files(self.assemble(pr), self.gh, self.gw, self.codec, self.width, self.height,
                                self.channels, int(pr.max()), self.entropy, patch_rates=None if same else pr)
            data = min(files.values(), key=len)
            size, est, dist = 8 * len(data), self.R[lv, cols].sum(), self.D[lv, cols].sum()
            if size <= target and (best is None or dist < best[0]):
                best = (dist, data)
            if (size <= target and size >= 0.995 * target) or (best is None and (lv == np.argmin(self.R, 0)).all()):
                break  # close enough, or nothing smaller to try
            budget = max(1.0, est * target / size * (0.998 if size > target else 1.0))  # real/estimate ratio
        return data if best is None else best[1]

    def assemble(self, patch_rates: np.ndarray) -> np.ndarray:
        """Bits [P, max(patch_rates)] of a file: each patch's code at its own rate, zero beyond it."""
        pr = np.asarray(patch_rates)
        out = np.zeros((pr.size, int(pr.max())), np.uint8)
        for r, b in self.bits.items():
            sel = pr == r
            if sel.any():
                out[sel, :r] = b[sel]
        return out


def compress_adaptive(src: np.ndarray, codec: "Codec", bpp: float, channels: int = 3, entropy: str = "auto",
                      search=None, progress: bool = False) -> bytes:
    """uint8 [H, W, 3] -> an adaptive-rate ``.mbc`` of at most ``bpp`` bits per pixel (see :class:`AdaptiveCoder`)."""
    check_bpp(bpp)  # before the encode and decodes
    return AdaptiveCoder.prepare(src, codec, channels, entropy, search, progress).code(bpp)
