"""Rate-distortion objective and evaluation of codecs with the CompressAI contract.

Loss (CompressAI's ``RateDistortionLoss``, MSE flavour)::

    L = lambda * 255^2 * MSE(x, x_hat) + bpp,      bpp = sum(-log2 likelihoods) / (B * H * W)

``evaluate_bitstream`` measures real rates with ``compress``/``decompress`` (requires ``update()``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from megabit.metrics import ms_ssim, psnr

from .data import pad_to_multiple

__all__ = ["rd_terms", "rd_loss_value", "evaluate_bitstream", "evaluate_likelihood", "check_codec_contract"]


def check_codec_contract(model: Any) -> None:
    """Duck-type check for the CompressAI contract; raises ValueError naming what is missing."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected a torch.nn.Module codec, got {type(model).__name__}")
    missing = [a for a in ("g_a", "g_s") if not isinstance(getattr(model, a, None), nn.Module)]
    if missing:
        raise ValueError(f"model lacks the codec contract: no {' / '.join(missing)} transform")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64))
    except Exception as e:
        raise ValueError(f"model lacks the codec contract: forward(x) failed ({type(e).__name__}: {e})") from None
    finally:
        model.train(was)
    if not isinstance(out, dict) or "x_hat" not in out or not isinstance(out.get("likelihoods"), dict) \
            or not out["likelihoods"]:
        raise ValueError("model lacks the codec contract: forward(x) must return {'x_hat', 'likelihoods': {...}}")


def rd_terms(out: dict[str, Any], x: Tensor) -> tuple[Tensor, Tensor]:
    """(bpp, mse) of one forward output; likelihoods are summed in float32."""
    n_pix = x.size(0) * x.size(2) * x.size(3)
    bpp = sum(torch.log(l.float()).sum() for l in out["likelihoods"].values()) / (-math.log(2) * n_pix)
    mse = torch.mean((out["x_hat"].float() - x.float()) ** 2)
    return bpp, mse  # type: ignore[return-value]


def rd_loss_value(model: nn.Module, x: Tensor, lmbda: float, batch: int = 8) -> dict[str, float]:
    """Deterministic RD loss of ``model`` (eval mode: rounding, no noise) on a calibration batch."""
    was = model.training
    model.eval()
    tot_bits, tot_se, n_pix, n_val = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, x.size(0), batch):
            xb = x[i:i + batch]
            out = model(xb)
            bpp, mse = rd_terms(out, xb)
            p = xb.size(0) * xb.size(2) * xb.size(3)
            tot_bits += float(bpp) * p
            tot_se += float(mse) * xb.numel()
            n_pix += p
            n_val += xb.numel()
    model.train(was)
    bpp, mse = tot_bits / n_pix, tot_se / n_val
    return {"loss": lmbda * 255**2 * mse + bpp, "bpp": bpp, "mse": mse}


def _evaluate(images: Iterable[Tensor], code: Any, msssim: bool, **extra: Any) -> dict[str, Any]:
    """Shared loop: ``code(x_padded) -> (x_hat_padded, bits, timings)`` per uint8 [3, H, W] image."""
    rows = []
    for im in images:
        x = im.float().unsqueeze(0) / 255
        xp, (h, w) = pad_to_multiple(x, 64)
        x_hat, bits, timings = code(xp)
        x_hat = (x_hat[..., :h, :w].clamp(0, 1) * 255).round() / 255
        row = {"bpp": bits / (h * w), "psnr": float(psnr(x, x_hat)), **timings}
        if msssim and min(h, w) > 160:
            row["ms_ssim"] = float(ms_ssim(x, x_hat))
        rows.append(row)
    keys = rows[0].keys() if rows else []
    return {"n_images": len(rows), **extra, **{f"mean_{k}": sum(r[k] for r in rows) / len(rows) for k in keys},
            "per_image": rows}


@torch.no_grad()
def evaluate_bitstream(model: nn.Module, images: Iterable[Tensor], msssim: bool = True) -> dict[str, Any]:
    """Real-bitstream evaluation: bits from ``compress``, PSNR (and MS-SSIM) of ``decompress``.

    ``images`` are uint8 [3, H, W]; they are replicate-padded to a multiple of 64, the padding is
    cropped after decoding, and bpp counts all bytes of every string over the original pixel count.
    """
    model.eval()

    def code(xp: Tensor):
        t0 = time.perf_counter()
        enc = model.compress(xp)
        t1 = time.perf_counter()
        dec = model.decompress(enc["strings"], enc["shape"])
        t2 = time.perf_counter()
        n_bytes = sum(len(s) for group in enc["strings"] for s in group)
        return dec["x_hat"], 8 * n_bytes, {"enc_s": t1 - t0, "dec_s": t2 - t1}

    return _evaluate(images, code, msssim)


@torch.no_grad()
def evaluate_likelihood(model: nn.Module, images: Iterable[Tensor], msssim: bool = True) -> dict[str, Any]:
    """Like :func:`evaluate_bitstream` but the rate is the model's estimate ``sum(-log2 likelihoods)``.

    One eval-mode forward pass per image (latents rounded as at coding time), no entropy coding: for
    codecs whose real decoder is slow (the autoregressive context model of ``mbt2018`` /
    ``cheng2020-anchor`` decodes position by position in Python). The estimate omits the few bytes of
    stream framing that a real file carries; :func:`evaluate_bitstream` gives the real size.
    """
    model.eval()

    def code(xp: Tensor):
        t0 = time.perf_counter()
        out = model(xp)
        bits = -sum(float(torch.log2(l.float()).sum()) for l in out["likelihoods"].values())
        return out["x_hat"], bits, {"fwd_s": time.perf_counter() - t0}

    return _evaluate(images, code, msssim, rate="likelihood estimate")
