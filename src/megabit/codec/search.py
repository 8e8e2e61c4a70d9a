"""Encoder-side code search: spend encoding time to pick better code bits for the same decoder.

The NQE encoder (the 1-Mbit edge network) maps each 32x32 patch to its code bits in one pass. The
decoder is fixed, so any bit pattern is a valid code: a sender with time to spare can look for bits
that the decoder turns into a patch closer to the input, with no change to the bitstream format or
to the decoder (the idea of mozjpeg's trellis quantization, or of latent refinement for learned
codecs, Yang et al. 2020, applied to a binary code).

Search [I] (our addition; the paper has no such stage): a continuous latent ``u`` starts at the
encoder's code scaled by ``init``; each step decodes ``sign(u)`` (straight-through gradient) with the
patch decoder ``g_s``, takes Adam steps on the per-patch MSE and clips ``u`` to [-1, 1]. Every
step's binary code is scored exactly (its forward pass *is* the decoded patch), and each patch keeps
the best code seen, starting with the encoder's own: the patch decoder's MSE of the result is never
worse than the encoder's. The loss stops at ``g_s``'s output [I] (PURENET's refinement is left out
of the loop: it is the costly full-frame part; the final image still goes through it). With a model
that has a cross-patch code context module (``PatchCodecConfig.code_context``) the loop decodes each
patch alone, its context computed from its own code only [I]: a proxy for the frame decode, which
the final image still gets.

Rate-distortion search (``lmbda``, [I] our addition): the same steps on ``bpp + lmbda * 255^2 *
MSE`` per patch (CompressAI's lambda convention), the rate of a code under the codec's causal context
model (:meth:`ContextModel.rate_fn`, its float logits through softplus; gradients reach each bit as a
symbol and as the context of later bits). The rate couples neighbouring patches, so an image is one
chunk, each patch keeps its best code against the neighbours of that step, and the result is
checked on the whole image (exact code length, patch MSE): never worse than the encoder's code.
Smaller ``lmbda`` = fewer bits; the payload is coded with that context model (``--entropy ctx``).

What it is not: this is not the edge encoder. It runs the float decoder at the sender (~1 s per 384
patches per step on one CPU core). ``steps=0`` (the default everywhere) is the paper's setting:
the NQE encoder's code as is. Results with search are reported apart from the encoder's.

>>> import numpy as np, torch
>>> from megabit.codec.api import Codec
>>> from megabit.models.patch_codec import PatchCodec, PatchCodecConfig
>>> torch.manual_seed(0) and None
>>> c = Codec.from_model(PatchCodec(PatchCodecConfig.tiny()).eval(), name="codec-tiny")
>>> x = torch.rand(1, 3, 64, 64) * 255
>>> bits = c.model.compress(x, 64).numpy()
>>> better = search_bits(c, x, bits, 64, SearchConfig(steps=5))
>>> better.shape == bits.shape and better.dtype == np.uint8
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..models.patch_codec import PATCH, patchify

__all__ = ["SearchConfig", "search_bits", "search_codes", "patch_mse", "rd_cost"]

PIXELS = PATCH * PATCH  # per patch: bits / PIXELS = bpp


@dataclass(frozen=True)
class SearchConfig:
    """Encoder-side code search settings (``steps=0``: off, the NQE encoder's code as is)."""

    steps: int = 0
    lr: float = 0.02  # Adam step on u; with Adam only lr / init matters
    init: float = 0.05  # |u| at the start: small, so that a bit can flip within a few steps
    chunk: int = 1024  # patches per optimisation batch: bounds memory, exact (per-patch losses are independent)
    #: rate-distortion search [I]: minimise ``bpp + lmbda * 255^2 * MSE`` per patch (CompressAI's lambda
    #: convention), the rate under the codec's context model; None = distortion only (the first search)
    lmbda: float | None = None

    def __post_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"search steps must be an integer >= 0, got {self.steps!r}")
        if not (self.lr > 0 and self.init > 0 and self.chunk >= 1):
            raise ValueError("search lr and init must be > 0 and chunk >= 1")
        if self.lmbda is not None and not (self.lmbda > 0 and self.steps > 0):
            raise ValueError(f"rate-distortion search needs lambda > 0 and search steps > 0, got lambda "
                             f"{self.lmbda!r} with {self.steps} steps")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def patch_mse(codec, x: torch.Tensor, bits: np.ndarray, rate_bits: int) -> np.ndarray:
    """Per-patch MSE (0..1 scale) of ``g_s``'s decoding of ``bits`` against the padded image ``x``
    ([1, 3, 32gh, 32gw], 0..255)."""
    m = codec.model
    tgt = patchify(x.float() / 255.0)
    out = []
    for i in range(0, tgt.shape[0], 512):
        codes = m.codes_from_bits(torch.from_numpy(np.ascontiguousarray(bits[i : i + 512])), rate_bits)
        out.append(F.mse_loss(m.decode_patches(codes, rate_bits), tgt[i : i + 512], reduction="none").mean((1, 2, 3)))
    return torch.cat(out).numpy()


def search_codes(model, tgt: torch.Tensor, start: torch.Tensor, rate_bits: int, cfg: SearchConfig,
                 on_step=None, rate_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The search on patches: ``tgt`` [n, 3, 32, 32] on 0..1, ``start`` [n, k, ...] the +-1 code of the
    rate's k channels. Returns (best code [n, k, ...] in +-1, its per-patch loss: MSE, or with
    ``rate_fn`` (codes -> bits per patch, differentiable) ``bits / 1024 + cfg.lmbda * 255^2 * MSE``).
    The caller sets the model's mode and whether its parameters need gradients (only ``u`` is
    optimised here)."""
    k = start.shape[1]
    pad = start.new_zeros((start.shape[0], model.cfg.code_channels - k, *start.shape[2:]))  # channels beyond the rate: zero
    u = (start * cfg.init).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=cfg.lr)
    best, best_loss = start.clone(), None
    for step in range(cfg.steps + 1):
        b = torch.where(u > 0, 1.0, -1.0)
        with torch.enable_grad():
            bs = b + (u - u.detach())
            rec = model.decode_patches(torch.cat([bs, pad], 1), rate_bits)
            loss = F.mse_loss(rec, tgt, reduction="none").mean((1, 2, 3))
            if rate_fn is not None:  # per patch: bits / pixels + lambda 255^2 MSE
                loss = rate_fn(bs) / PIXELS + cfg.lmbda * 255.0**2 * loss
        lo = loss.detach()
        if best_loss is None:  # step 0 scores the start (the encoder's own code)
            best_loss = lo.clone()
        else:
            better = lo < best_loss
            best_loss = torch.where(better, lo, best_loss)
            best[better] = b[better].detach()
        if step == cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            u.clamp_(-1.0, 1.0)
        if on_step is not None:
            on_step()
    return best, best_loss


def search_bits(codec, x: torch.Tensor, bits: np.ndarray, rate_bits: int, cfg: SearchConfig | int,
                progress: bool = False) -> np.ndarray:
    """Improve the encoder's ``bits`` [P, rate_bits] (0/1 uint8, row-major patches) for the padded
    image ``x`` [1, 3, 32gh, 32gw] on 0..255. Returns new bits of the same shape. ``progress``: a
    tqdm bar over the steps of all chunks."""
    cfg = SearchConfig(steps=cfg) if isinstance(cfg, int) else cfg
    bits = np.asarray(bits, np.uint8)
    if cfg.steps == 0:
        return bits
    m = codec.model
    k = m.cfg.channels_for(rate_bits)
    tgt_all = patchify(x.float() / 255.0)
    if tgt_all.shape[0] != bits.shape[0] or bits.shape[1] != rate_bits:
        raise ValueError(f"bits {bits.shape} do not match the image's {tgt_all.shape[0]} patches x {rate_bits} bits")
    gh, gw = x.shape[-2] // PATCH, x.shape[-1] // PATCH
    rate_fn = None
    if cfg.lmbda is not None:
        if codec.ctx is None:
            raise ValueError(f"rate-distortion search needs a context model; model {codec.name} has none")
        rate_fn = codec.ctx.rate_fn(gh, gw)
        cfg = replace(cfg, chunk=bits.shape[0])  # [I] the rate couples neighbouring patches: one chunk per image
    req = [p.requires_grad for p in m.parameters()]
    for p in m.parameters():
        p.requires_grad_(False)
    was_training = m.training
    m.eval()
    out = bits.copy()
    from tqdm import tqdm

    n_chunks = -(-bits.shape[0] // cfg.chunk)
    bar = tqdm(total=n_chunks * cfg.steps, desc="code search", unit="step", disable=not progress, leave=False)
    try:
        for i in range(0, bits.shape[0], cfg.chunk):
            full = m.codes_from_bits(torch.from_numpy(bits[i : i + cfg.chunk]), rate_bits)
            best, _ = search_codes(m, tgt_all[i : i + cfg.chunk], full[:, :k], rate_bits, cfg, bar.update, rate_fn)
            out[i : i + best.shape[0]] = (best > 0).to(torch.uint8).reshape(best.shape[0], -1).numpy()
        if rate_fn is not None and rd_cost(codec, x, out, rate_bits, cfg.lmbda) > rd_cost(codec, x, bits, rate_bits, cfg.lmbda):
            out = bits  # patches kept their best code against the neighbours of that step: the whole must not be worse
    finally:
        bar.close()
        for p, r in zip(m.parameters(), req):
            p.requires_grad_(r)
        m.train(was_training)
    return out


def rd_cost(codec, x: torch.Tensor, bits: np.ndarray, rate_bits: int, lmbda: float) -> float:
    """``bpp + lmbda * 255^2 * MSE`` of ``bits`` on the padded image ``x`` (the patch decoder's MSE,
    the context model's exact code length): what the rate-distortion search minimises."""
    from .context_model import ideal_bits

    rate = ideal_bits(bits, x.shape[-2] // PATCH, x.shape[-1] // PATCH, codec.ctx) / (bits.shape[0] * PIXELS)
    return rate + lmbda * 255.0**2 * float(patch_mse(codec, x, bits, rate_bits).mean())
