"""Second stage v2 (beyond the paper): a causal linear context model over the full-frame code map.

The NQE encoder's code of an image is a map of ``k = rate / 16`` binary channels on a grid of
``4 gh x 4 gw`` positions (4 x 4 per 32x32 patch). Neighbouring positions, also across patch
boundaries, and earlier channels at the same place are strongly correlated, which the per-patch
table of :mod:`megabit.codec.entropy_model` barely uses. Here every bit is coded with the
probability ``sigmoid(logit / 2^frac_bits)`` of a PixelCNN-like **linear** model [I]:

    logit[c, y, x] = bias[c, y % 4, x % 4]
                   + sum_{c' < c} sum_{|dy|,|dx| <= k/2} W[c, c', dy, dx] * s[c', y+dy, x+dx]
                   + sum_{causal (dy, dx)} W[c, c, dy, dx] * s[c, y+dy, x+dx]

with ``s = +-1`` (0 outside the frame), integer weights and integer sums, so encoder and decoder
agree exactly on any machine. Coding order: channel by channel, raster order within a channel
("causal" = the rows above and the positions to the left in the same row). The nested rates are
prefixes in channel order, so one model codes all three. The logit is rounded to a bin of
``2^-step_bits`` and looked up in an integer frequency table (16-bit rANS, escape frequency 1, via
:func:`megabit.entropy.encode_with_cdfs`); decoding runs bit by bit (numba when available, else a
slower pure-Python loop of the same function).

Fitted on code maps of training photos with full-batch Adam on the binary cross-entropy
(:func:`fit`), then rounded to integers (the rounding costs < 0.1 % of the rate).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> maps = (rng.random((4, 2, 8, 12)) < 0.3).astype(np.uint8)
>>> cm = fit(maps, CtxConfig(iters=5))
>>> bits = (rng.random((6, 32)) < 0.3).astype(np.uint8)   # 2 x 3 patches, 32 bits (2 channels)
>>> blob = encode(bits, 2, 3, cm)
>>> bool((decode(blob, 2, 3, 32, cm) == bits).all())
True
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..entropy import _common as C

__all__ = ["CtxConfig", "ContextModel", "fit", "encode", "decode", "ideal_bits", "code_map", "bits_from_map",
           "causal_mask", "present_map"]

GRID = 4  # code positions per patch side
PRECISION = 16
_M = 1 << PRECISION
_L = 1 << 31  # rANS lower bound (megabit.entropy.rans.CDF_RANS_L)
DIGEST = 4  # bytes of the model digest at the start of a payload


@dataclass(frozen=True)
class CtxConfig:
    """How :func:`fit` builds a model. [I] every value: chosen on held-out training photos."""

    kernel: int = 5  # spatial window (odd); 5 beat 3 by 0.03 bit/bit on 80 held-out photos
    frac_bits: int = 8  # weights and bias in units of 2^-8
    step_bits: int = 4  # logit bins of 2^-4
    logit_range: int = 16  # logits clipped to +-16 (p in [1e-7, 1 - 1e-7] before the 16-bit table)
    iters: int = 300
    lr: float = 0.05
    hidden: int = 0  # ReLU units per channel beside the linear part (0 = linear, the first shipped model)
    lr_hidden: float = 0.02  # Adam learning rate of every parameter when hidden > 0
    seed: int = 0


def causal_mask(channels: int, kernel: int) -> np.ndarray:
    """[C, C, k, k] 0/1: earlier channels everywhere in the window, the same channel causally."""
    h = kernel // 2
    m = np.zeros((channels, channels, kernel, kernel), np.int64)
    same = np.zeros((kernel, kernel), np.int64)
    same[:h] = 1
    same[h, :h] = 1
    for c in range(channels):
        m[c, :c] = 1
        m[c, c] = same
    return m


@dataclass
class ContextModel:
    weight: np.ndarray  # int64 [C, C, k, k], zero outside causal_mask
    bias: np.ndarray  # int64 [C, 4, 4]
    f1: np.ndarray  # int64 [2 * range * 2^step + 1]: frequency of a 1 per logit bin (f0 = 2^16 - 1 - f1)
    frac_bits: int
    step_bits: int
    #: optional hidden layer (H units per channel, same window and mask as the linear part):
    #: z += (sum_j v[c, j] * relu(ub[c, j] + sum u[c, j, ...] * s)) >> frac_bits
    hidden_weight: np.ndarray | None = None  # int64 [C, H, C, k, k]
    hidden_bias: np.ndarray | None = None  # int64 [C, H]
    hidden_out: np.ndarray | None = None  # int64 [C, H]

    def __post_init__(self):
        w, b, f1 = (np.asarray(a) for a in (self.weight, self.bias, self.f1))
        if w.ndim != 4 or w.shape[0] != w.shape[1] or w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
            raise ValueError(f"context model: bad weight shape {w.shape}")
        if b.shape != (w.shape[0], GRID, GRID) or f1.ndim != 1 or f1.size % 2 == 0:
            raise ValueError(f"context model: bad bias {b.shape} or table {f1.shape}")
        if not (0 <= self.step_bits <= self.frac_bits <= 16):
            raise ValueError("context model: bad frac_bits / step_bits")
        if np.any(w * (1 - causal_mask(w.shape[0], w.shape[2]))) or np.abs(w).max(initial=0) >= 1 << 20:
            raise ValueError("context model: weights outside the causal mask or too large")
        if np.abs(b).max(initial=0) >= 1 << 24 or f1.min() < 1 or f1.max() > _M - 2:
            raise ValueError("context model: bias or frequency table out of range")
        self.weight, self.bias, self.f1 = (np.ascontiguousarray(a, dtype=np.int64) for a in (w, b, f1))
        Cn, k = w.shape[0], w.shape[2]
        if self.hidden_weight is None:
            self.hidden_weight = np.zeros((Cn, 0, Cn, k, k), np.int64)
            self.hidden_bias = np.zeros((Cn, 0), np.int64)
            self.hidden_out = np.zeros((Cn, 0), np.int64)
        u, ub, v = (np.ascontiguousarray(a, dtype=np.int64) for a in (self.hidden_weight, self.hidden_bias,
                                                                         self.hidden_out))
        H = u.shape[1] if u.ndim == 5 else -1
        if u.shape != (Cn, H, Cn, k, k) or ub.shape != (Cn, H) or v.shape != (Cn, H):
            raise ValueError(f"context model: bad hidden layer shapes {u.shape}, {ub.shape}, {v.shape}")
        if np.any(u * (1 - causal_mask(Cn, k))[:, None]) or max(np.abs(a).max(initial=0) for a in (u, ub, v)) >= 1 << 20:
            raise ValueError("context model: hidden weights outside the causal mask or too large")
        self.hidden_weight, self.hidden_bias, self.hidden_out = u, ub, v

    @property
    def hidden(self) -> int:
        return self.hidden_weight.shape[1]

    @property
    def channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel(self) -> int:
        return self.weight.shape[2]

    def digest(self) -> bytes:
        h = hashlib.sha256(struct.pack("<II", self.frac_bits, self.step_bits))
        for a in (self.weight, self.bias, self.f1) + ((self.hidden_weight, self.hidden_bias, self.hidden_out)
                                                      if self.hidden else ()):  # linear: the first digest
            h.update(str(a.shape).encode())
            h.update(a.astype("<i8").tobytes())
        return h.digest()[:DIGEST]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        extra = {} if not self.hidden else {"hidden_weight": self.hidden_weight.astype(np.int32),
                                             "hidden_bias": self.hidden_bias.astype(np.int32),
                                             "hidden_out": self.hidden_out.astype(np.int32)}
        np.savez_compressed(buf, weight=self.weight.astype(np.int32), bias=self.bias.astype(np.int32),
                            f1=self.f1.astype(np.int32), frac_bits=self.frac_bits, step_bits=self.step_bits, **extra)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ContextModel":
        if not bytes(data[:2]) == b"PK":
            raise ValueError("not a context model (not an npz archive)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                hid = [z[n] for n in ("hidden_weight", "hidden_bias", "hidden_out")] if "hidden_weight" in z.files \
                    else [None] * 3
                return cls(z["weight"], z["bias"], z["f1"], int(z["frac_bits"]), int(z["step_bits"]), *hid)
        except KeyError as e:
            raise ValueError(f"not a context model (missing {e})") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"not a context model ({type(e).__name__}: {str(e)[:80]})") from None

    # ---------------------------------------------------------------------- logits --
    def cross_logits(self, s: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Parts of channel ``c``'s logit known before the channel is decoded (bias + earlier
        channels): linear [Y, X] and hidden pre-activations [H, Y, X], int64.

        float64 convolution of small integers: exact (every partial sum is far below 2^53)."""
        Y, X = s.shape[1:]
        H = self.hidden
        base = np.tile(self.bias[c], (Y // GRID, X // GRID))
        base_h = np.broadcast_to(self.hidden_bias[c][:, None, None], (H, Y, X)).copy()
        if c == 0:
            return base, base_h
        w = np.concatenate([self.weight[c : c + 1, :c], self.hidden_weight[c, :, :c]], 0)
        z = F.conv2d(torch.from_numpy(s[None, :c].astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                     padding=self.kernel // 2)[0].numpy().round().astype(np.int64)
        return base + z[0], base_h + z[1:]

    def bins(self, logit: np.ndarray) -> np.ndarray:
        """Integer logits -> table rows: round to 2^-step_bits, clip to the table."""
        sh = self.frac_bits - self.step_bits
        half = (1 << sh) >> 1
        lim = (self.f1.size - 1) // 2
        return np.clip((logit + half) >> sh, -lim, lim) + lim

    def all_logits(self, s: np.ndarray) -> np.ndarray:
        """Every logit of a fully known map ``s`` (+-1 int [k, Y, X]) at once: what the encoder uses."""
        k = s.shape[0]
        H = self.hidden
        Y, X = s.shape[1:]
        w = np.concatenate([self.weight[:k, :k], self.hidden_weight[:k, :, :k].reshape(k * H, k, *self.weight.shape[2:])])
        z = F.conv2d(torch.from_numpy(s[None].astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                     padding=self.kernel // 2)[0].numpy().round().astype(np.int64)
        out = z[:k] + np.tile(self.bias[:k], (1, Y // GRID, X // GRID))
        if H:
            a = np.maximum(z[k:].reshape(k, H, Y, X) + self.hidden_bias[:k, :, None, None], 0)
            out += (a * self.hidden_out[:k, :, None, None]).sum(1) >> self.frac_bits
        return out

    def rate_fn(self, gh: int, gw: int):
        """A differentiable stand-in for :func:`ideal_bits`, for the rate-distortion code search:
        ``f(codes)`` with codes ±1 float [gh*gw, k, 4, 4] (patch order of :meth:`PatchCodec.compress`)
        returns the code length of every patch in bits (float [gh*gw]). The same logits in float
        (weights / 2^frac_bits, no rounding) through ``softplus``; gradients reach the codes both as
        the coded symbols and as the context of later ones."""
        sc = float(1 << self.frac_bits)
        t = lambda a: torch.from_numpy(np.asarray(a, np.float32)) / sc  # noqa: E731
        w, b, u, ub, v = (t(a) for a in (self.weight, self.bias, self.hidden_weight, self.hidden_bias,
                                         self.hidden_out))
        lim = ((self.f1.size - 1) // 2) / float(1 << self.step_bits)
        H, pad = self.hidden, self.kernel // 2

        def f(codes: torch.Tensor) -> torch.Tensor:
            P, k = codes.shape[:2]
            if P != gh * gw or k > self.channels:
                raise ValueError(f"codes {tuple(codes.shape)} do not match {gh}x{gw} patches of <= {self.channels} channels")
            s = codes.reshape(gh, gw, k, GRID, GRID).permute(2, 0, 3, 1, 4).reshape(1, k, gh * GRID, gw * GRID)
            z = F.conv2d(s, w[:k, :k], padding=pad) + b[:k].repeat(1, gh, gw)[None]
            if H:
                a = F.relu(F.conv2d(s, u[:k, :, :k].reshape(k * H, k, *u.shape[-2:]), ub[:k].reshape(-1), padding=pad))
                z = z + F.conv2d(a, v[:k].reshape(k, H, 1, 1), groups=k)
            nll = F.softplus(-s * z.clamp(-lim, lim)) / math.log(2.0)
            return nll[0].reshape(k, gh, GRID, gw, GRID).sum((0, 2, 4)).reshape(-1)

        return f


# --------------------------------------------------------------------- layout ---


def code_map(bits: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """bits uint8 [gh*gw, 16k] (layout of ``PatchCodec.compress``) -> +-1 int8 [k, 4gh, 4gw]."""
    P, R = bits.shape
    k = R // (GRID * GRID)
    m = np.asarray(bits, np.int8).reshape(gh, gw, k, GRID, GRID).transpose(2, 0, 3, 1, 4)
    return (m.reshape(k, gh * GRID, gw * GRID) * 2 - 1).astype(np.int8)


def bits_from_map(s: np.ndarray) -> np.ndarray:
    """Inverse of :func:`code_map`."""
    k, Y, X = s.shape
    gh, gw = Y // GRID, X // GRID
    b = (s > 0).astype(np.uint8).reshape(k, gh, GRID, gw, GRID).transpose(1, 3, 0, 2, 4)
    return np.ascontiguousarray(b.reshape(gh * gw, k * GRID * GRID))


def _cdf_rows(f1: np.ndarray) -> np.ndarray:
    f0 = (_M - 1) - f1
    return np.stack([np.zeros_like(f0), f0, f0 + f1, np.full_like(f0, _M)], 1)


def freq_table(step_bits: int, logit_range: int) -> np.ndarray:
    """Frequency of a 1 for every logit bin (computed once when a model is made, then stored)."""
    lim = logit_range << step_bits
    z = np.arange(-lim, lim + 1, dtype=np.float64) / (1 << step_bits)
    p1 = 1.0 / (1.0 + np.exp(-z))
    return np.clip(np.round(p1 * (_M - 1)), 1, _M - 2).astype(np.int64)


# --------------------------------------------------------------------- coding ---


def _check_rate(cm: ContextModel, R: int) -> int:
    k, r = divmod(R, GRID * GRID)
    if r or not 1 <= k <= cm.channels:
        raise ValueError(f"rate {R} bits/patch does not fit the context model ({cm.channels} channels of 16 bits)")
    return k


def present_map(patch_rates: np.ndarray | None, k: int, gh: int, gw: int) -> np.ndarray | None:
    """Adaptive rate: bool [k, 4gh, 4gw], True where channel c is sent (c < rate_p / 16 of its patch);
    None for a fixed rate (every position sent)."""
    if patch_rates is None:
        return None
    kp = np.asarray(patch_rates, np.int64).reshape(gh, gw) // (GRID * GRID)
    kmap = np.repeat(np.repeat(kp, GRID, 0), GRID, 1)
    return np.arange(k)[:, None, None] < kmap[None]


def encode(bits: np.ndarray, gh: int, gw: int, cm: ContextModel, patch_rates: np.ndarray | None = None) -> bytes:
    """uint8 0/1 [gh*gw, R] -> ``digest (4 B) | rANS payload`` (channel-major, raster order).

    ``patch_rates`` (adaptive rate, [gh*gw] bits per patch <= R): only the first ``rate_p / 16``
    channels of patch p are coded; the others are 0 ("not sent") in every later bit's context, as
    the decoder sees them. [I] the model itself is the fixed-rate one (fitted on full maps)."""
    from ..entropy import encode_with_cdfs

    bits = np.asarray(bits, np.uint8)
    k = _check_rate(cm, bits.shape[1])
    s = code_map(bits, gh, gw)
    keep = present_map(patch_rates, k, gh, gw)
    if keep is not None:
        s = s * keep
    idx = cm.bins(cm.all_logits(s))
    sym = (s > 0).astype(np.int32)
    if keep is not None:
        idx, sym = idx[keep], sym[keep]
    tab = _cdf_rows(cm.f1)
    n = tab.shape[0]
    blob = encode_with_cdfs(sym.reshape(-1), idx.reshape(-1), tab, np.full(n, 4), np.zeros(n, np.int64),
                            precision=PRECISION)
    return cm.digest() + blob


def _decode_channel(words, wp, x, base, wself, base_h, uself, v, fb, h, f1, sh, lim, present, out):
    """Decode one channel in raster order; out int8 [Y, X] receives +-1 where ``present`` (uint8
    [Y, X]) is 1 and stays 0 elsewhere (not sent).

    ``base``/``base_h``: the linear logit and hidden pre-activations from the bias and earlier
    channels; ``wself``/``uself``: their causal taps on this channel. Returns (wp, x, status):
    status 0 ok, 1 escape symbol (never written: corrupted payload)."""
    Y, X = out.shape
    H = v.shape[0]
    nw = words.shape[0]
    mask = (1 << 16) - 1
    half = (1 << sh) >> 1
    ah = np.zeros(H, np.int64)
    for y in range(Y):
        for xx in range(X):
            if present[y, xx] == 0:
                continue
            acc = base[y, xx]
            for j in range(H):
                ah[j] = base_h[j, y, xx]
            for dy in range(-h, 1):  # the causal taps on this channel, shared by both parts
                yy = y + dy
                if yy < 0:
                    continue
                for dx in range(-h, h + 1):
                    if dy == 0 and dx >= 0:
                        break
                    xs = xx + dx
                    if xs < 0 or xs >= X:
                        continue
                    sv = out[yy, xs]
                    acc += wself[dy + h, dx + h] * sv
                    for j in range(H):
                        ah[j] += uself[j, dy + h, dx + h] * sv
            hs = 0
            for j in range(H):
                if ah[j] > 0:
                    hs += v[j] * ah[j]
            acc += hs >> fb
            b = (acc + half) >> sh
            if b < -lim:
                b = -lim
            elif b > lim:
                b = lim
            g1 = f1[b + lim]
            g0 = 65535 - g1
            slot = x & mask
            if slot < g0:
                x = g0 * (x >> 16) + slot
                out[y, xx] = -1
            elif slot < g0 + g1:
                x = g1 * (x >> 16) + slot - g0
                out[y, xx] = 1
            else:
                return wp, x, 1
            if x < 2147483648:
                w = 0
                if wp < nw:
                    w = words[wp]
                x = (x << 32) | w
                wp += 1
    return wp, x, 0


_decode_channel_nb = C.jit(_decode_channel)


def decode(blob: bytes, gh: int, gw: int, R: int, cm: ContextModel, backend: str | None = None,
           patch_rates: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`encode`. Raises ValueError on a payload of another model or a corrupted one.
    ``backend``: None (numba if installed), "numba" or "python" (same results, the latter slower).
    ``patch_rates``: the adaptive file's rate per patch (bits beyond a patch's rate come back 0)."""
    from ..entropy.rans import MAGIC_CDF

    k = _check_rate(cm, R)
    blob = bytes(blob)
    if len(blob) < DIGEST or blob[:DIGEST] != cm.digest():
        raise ValueError("the .mbc payload was coded with a different context model than the loaded one")
    log, K, n, nw, body = C.unpack_header(blob[DIGEST:], MAGIC_CDF, True)
    Y, X = GRID * gh, GRID * gw
    keep = present_map(patch_rates, k, gh, gw)
    if keep is None:
        keep = np.ones((k, Y, X), bool)
    if log != PRECISION or K != 1 or n != int(keep.sum()) or len(body) != 8 + 4 * nw:
        raise ValueError("corrupted payload: context-coded block does not match the image")
    x = int(np.frombuffer(body[:8], "<u8")[0])
    if not _L <= x < 1 << 63:
        raise ValueError("corrupted payload: initial state outside [2**31, 2**63)")
    words = np.frombuffer(body[8:], "<u4").astype(np.int64)
    fn = _decode_channel_nb if C.resolve_backend(backend) == "numba" else _decode_channel
    s = np.zeros((k, Y, X), np.int8)
    h = cm.kernel // 2
    sh = cm.frac_bits - cm.step_bits
    lim = (cm.f1.size - 1) // 2
    wp = 0
    x = np.int64(x) if fn is not _decode_channel else x
    for c in range(k):
        base, base_h = cm.cross_logits(s, c)
        out = np.zeros((Y, X), np.int8)
        wp, x, status = fn(words, wp, x, base, cm.weight[c, c], base_h, np.ascontiguousarray(cm.hidden_weight[c, :, c]),
                           cm.hidden_out[c], cm.frac_bits, h, cm.f1, sh, lim, keep[c].astype(np.uint8), out)
        if status:
            raise ValueError("corrupted payload: decoded an escape symbol")
        s[c] = out
    if wp != nw or int(x) != _L:
        raise ValueError("corrupted payload: the context-coded block did not decode to its end")
    return bits_from_map(s)


def ideal_bits(bits: np.ndarray, gh: int, gw: int, cm: ContextModel) -> float:
    """Shannon code length (bits) of ``bits`` under the model (what the payload approaches)."""
    _check_rate(cm, np.asarray(bits).shape[1])
    s = code_map(bits, gh, gw)
    f1 = cm.f1[cm.bins(cm.all_logits(s))]
    p = np.where(s > 0, f1, (_M - 1) - f1) / _M
    return float(-np.log2(p).sum())


# ------------------------------------------------------------------------ fit ---


def fit(maps: np.ndarray, cfg: CtxConfig = CtxConfig(), progress: bool = False) -> ContextModel:
    """Fit on code maps uint8 0/1 [N, C, Y, X] (Y, X multiples of 4; C = the model's channels)."""
    if cfg.kernel % 2 == 0 or cfg.kernel < 1:
        raise ValueError(f"kernel must be odd and >= 1, got {cfg.kernel}")
    maps = torch.from_numpy(np.asarray(maps, np.float32))
    N, Cn, Y, X = maps.shape
    if Y % GRID or X % GRID:
        raise ValueError(f"code maps must be multiples of {GRID} on each side, got {Y}x{X}")
    s = maps * 2 - 1
    mask = torch.from_numpy(causal_mask(Cn, cfg.kernel).astype(np.float32))
    w = torch.zeros(Cn, Cn, cfg.kernel, cfg.kernel, requires_grad=True)
    b = torch.zeros(1, Cn, GRID, GRID, requires_grad=True)
    H = cfg.hidden
    g = torch.Generator().manual_seed(cfg.seed)
    u = (0.05 * torch.randn(Cn * H, Cn, cfg.kernel, cfg.kernel, generator=g)).requires_grad_()
    ub = torch.zeros(Cn * H, requires_grad=True)
    v = torch.zeros(Cn, H, 1, 1, requires_grad=True)
    mask_h = mask.repeat_interleave(H, 0)
    lr = cfg.lr_hidden if H else cfg.lr
    opt = torch.optim.Adam([w, b] + ([u, ub, v] if H else []), lr=lr)
    it = range(cfg.iters)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="context model", unit="it")
    for i in it:
        if i == cfg.iters // 2:
            for g in opt.param_groups:
                g["lr"] = lr / 5
        opt.zero_grad()
        z = F.conv2d(s, w * mask, padding=cfg.kernel // 2) + b.repeat(1, 1, Y // GRID, X // GRID)
        if H:
            z = z + F.conv2d(F.relu(F.conv2d(s, u * mask_h, ub, padding=cfg.kernel // 2)), v, groups=Cn)
        loss = F.binary_cross_entropy_with_logits(z, maps)
        loss.backward()
        opt.step()
    scale = 1 << cfg.frac_bits
    wq = (w.detach() * mask * scale).round().to(torch.int64).numpy()
    bq = (b.detach()[0] * scale).round().to(torch.int64).numpy()
    q = lambda t: (t.detach() * scale).round().to(torch.int64).numpy()  # noqa: E731
    hid = [q(u * mask_h).reshape(Cn, H, Cn, cfg.kernel, cfg.kernel), q(ub).reshape(Cn, H), q(v).reshape(Cn, H)]
    return ContextModel(wq, bq, freq_table(cfg.step_bits, cfg.logit_range), cfg.frac_bits, cfg.step_bits, *hid)
