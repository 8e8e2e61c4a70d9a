"""Optional second stage (beyond the paper): lossless rANS coding of the patch code bits.

The NQE encoder emits a fixed number of bits per patch (patch-constant rate). Those bits are not
uniform: each bit position has its own bias, and neighbouring patches of smooth regions have
similar codes. We code them losslessly with learned, context-dependent probabilities:

* patches are split in a **checkerboard** (``(i + j) % 2``). Pass A (even patches) uses one
  probability per bit position, ``p_A[b]``. Pass B (odd patches) is decoded after A, so each of its
  bits is conditioned on the same bit position in its (up to 4) A-neighbours:
  context ``c = bin(mean of the neighbour bits)`` in 5 bins ``{0, (0,.5), .5, (.5,1), 1}``
  -> ``p_B[b, c]``. ([I] our design: two passes keep decoding to two rANS payloads, since
  ``megabit.entropy.decode_with_cdfs`` needs all contexts up front.)
* probabilities are estimated on training patches (counts + 1/2, Krichevsky–Trofimov) and stored
  in the model file as ``bit_probs`` float32 ``[max_bits, 6]`` (column 0 = pass A, 1..5 = pass B).
* bits are coded with ``megabit.entropy.encode_with_cdfs`` (rANS64, 16-bit precision); each
  probability is clipped to ``[2^-15, 1 - 2^-15]`` and the coder's escape symbol gets frequency 1.

Guarantee: exact invertibility (tested); the fixed-rate raw packing stays available and the
compressor keeps whichever of the two is smaller (flag in the .mbc header).

>>> import numpy as np
>>> probs = np.full((64, 6), 0.5, dtype=np.float32)
>>> bits = np.random.default_rng(0).integers(0, 2, (6, 64)).astype(np.uint8)
>>> blob = encode_bits(bits, 2, 3, probs)
>>> bool((decode_bits(blob, 2, 3, 64, probs) == bits).all())
True
"""

from __future__ import annotations

import struct

import numpy as np
import torch

__all__ = ["fit_bit_probs", "encode_bits", "decode_bits", "ideal_bits", "N_CTX"]

N_CTX = 6
PRECISION = 16


def _checker(gh: int, gw: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return ((i + j) % 2).reshape(-1)


def _contexts(bits: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """Context index (0..5) of every bit of every patch; bits uint8 [gh*gw, R] -> int [gh*gw, R]."""
    R = bits.shape[1]
    b = bits.reshape(gh, gw, R).astype(np.int32)
    a_mask = (_checker(gh, gw) == 0).reshape(gh, gw)
    s = np.zeros((gh, gw, R), np.int32)
    n = np.zeros((gh, gw, 1), np.int32)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ys = slice(max(0, -dy), gh - max(0, dy))
        yd = slice(max(0, dy), gh - max(0, -dy))
        xs = slice(max(0, -dx), gw - max(0, dx))
        xd = slice(max(0, dx), gw - max(0, -dx))
        # neighbour at (y+dy, x+dx) contributes to (y, x) if it is an A patch
        src = b[yd, xd] * a_mask[yd, xd, None]
        s[ys, xs] += src
        n[ys, xs] += a_mask[yd, xd, None]
    frac = np.where(n > 0, s / np.maximum(n, 1), 0.5)
    ctx = np.select([frac == 0, frac < 0.5, frac == 0.5, frac < 1], [1, 2, 3, 4], 5)
    ctx = np.where(n > 0, ctx, 3)  # an isolated B patch (1-patch-wide grids) uses the "0.5" bin
    ctx = np.where(a_mask[:, :, None], 0, ctx)
    return ctx.reshape(gh * gw, R)


@torch.no_grad()
def fit_bit_probs(model, images: torch.Tensor, gen: torch.Generator, n_images: int = 128) -> torch.Tensor:
    """Estimate ``[max_bits, 6]`` probabilities of bit = 1 on training images (uint8 [N, 3, H, W])."""
    from ..models.patch_codec import patchify

    cfg = model.cfg
    R = cfg.max_bits
    ones = np.full((R, N_CTX), 0.5)
    tot = np.full((R, N_CTX), 1.0)
    idx = torch.randperm(images.shape[0], generator=gen)[:n_images]
    for i in idx.tolist():
        x = images[i : i + 1].float()
        gh, gw = x.shape[2] // 32, x.shape[3] // 32
        bits = model.compress(x[:, :, : gh * 32, : gw * 32], R).numpy()
        ctx = _contexts(bits, gh, gw)
        pos = np.broadcast_to(np.arange(R), bits.shape)
        np.add.at(ones, (pos, ctx), bits)
        np.add.at(tot, (pos, ctx), 1)
    return torch.from_numpy((ones / tot).astype(np.float32))


def _cdf_table(probs: np.ndarray) -> np.ndarray:
    """[K] probabilities of a 1 -> int64 CDF rows [K, 4]: (0, f0, f0 + f1, 2^16), escape freq 1."""
    M = 1 << PRECISION
    p1 = np.clip(np.asarray(probs, np.float64).reshape(-1), 2.0**-15, 1 - 2.0**-15)
    f1 = np.clip(np.round(p1 * (M - 1)), 1, M - 2).astype(np.int64)
    f0 = (M - 1) - f1
    return np.stack([np.zeros_like(f0), f0, f0 + f1, np.full_like(f0, M)], 1)


def ideal_bits(bits: np.ndarray, gh: int, gw: int, probs: np.ndarray) -> float:
    """Shannon code length (bits) of ``bits`` under the model: what the rANS payloads approach."""
    R = bits.shape[1]
    ctx = _contexts(bits, gh, gw)
    p1 = np.clip(probs[np.arange(R)[None, :], ctx], 2.0**-15, 1 - 2.0**-15)
    p = np.where(bits == 1, p1, 1 - p1)
    return float(-np.log2(p).sum())


def _pass_indices(bits_shape, gh, gw, ctx):
    P, R = bits_shape
    chk = _checker(gh, gw)
    rows = np.arange(R)[None, :] * N_CTX + ctx
    return chk, rows


def encode_bits(bits: np.ndarray, gh: int, gw: int, probs: np.ndarray) -> bytes:
    """uint8 0/1 [gh*gw, R] -> ``u32 len(A) | payload A | payload B`` (two rANS payloads)."""
    from ..entropy import encode_with_cdfs

    bits = np.asarray(bits, np.uint8)
    P, R = bits.shape
    tab = _cdf_table(probs[:R])
    lengths = np.full(tab.shape[0], 4)
    offs = np.zeros(tab.shape[0], np.int64)
    chk, rows = _pass_indices(bits.shape, gh, gw, _contexts(bits, gh, gw))
    out = []
    for part in (0, 1):
        sel = chk == part
        out.append(encode_with_cdfs(bits[sel].reshape(-1).astype(np.int32), rows[sel].reshape(-1), tab, lengths, offs,
                                    precision=PRECISION))
    return struct.pack("<I", len(out[0])) + out[0] + out[1]


def decode_bits(blob: bytes, gh: int, gw: int, R: int, probs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_bits`. Raises ValueError on a corrupted payload."""
    from ..entropy import decode_with_cdfs

    if len(blob) < 4:
        raise ValueError("corrupted payload: entropy-coded block truncated")
    (la,) = struct.unpack_from("<I", blob, 0)
    if 4 + la > len(blob):
        raise ValueError("corrupted payload: entropy-coded block truncated")
    tab = _cdf_table(probs[:R])
    lengths = np.full(tab.shape[0], 4)
    offs = np.zeros(tab.shape[0], np.int64)
    P = gh * gw
    chk = _checker(gh, gw)
    bits = np.zeros((P, R), np.uint8)
    na = int((chk == 0).sum())
    rows_a = np.broadcast_to(np.arange(R)[None, :] * N_CTX, (na, R)).reshape(-1)
    a = decode_with_cdfs(blob[4 : 4 + la], rows_a, tab, lengths, offs, precision=PRECISION)
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError("corrupted payload: decoded a non-binary symbol")
    bits[chk == 0] = a.reshape(na, R).astype(np.uint8)
    ctx = _contexts(bits, gh, gw)
    rows = np.arange(R)[None, :] * N_CTX + ctx
    sel = chk == 1
    if sel.any() or len(blob) > 4 + la:
        b = decode_with_cdfs(blob[4 + la :], rows[sel].reshape(-1), tab, lengths, offs, precision=PRECISION)
        if b.size and (b.min() < 0 or b.max() > 1):
            raise ValueError("corrupted payload: decoded a non-binary symbol")
        bits[sel] = b.reshape(-1, R).astype(np.uint8)
    return bits
