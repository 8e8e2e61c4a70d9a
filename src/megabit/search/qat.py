"""Quantization-aware fine-tuning of a mixed-precision codec on the RD loss (FMPQ's last stage).

The plan's bit-widths are applied with :class:`~megabit.search.quantize.FakeQuant` parametrizations
(per-channel scales initialised by absmax and trained with the weights; rounding through the
identity STE; the clip through :func:`megabit.quant.clamp_leaky` with slope ``leak`` outside the
code range -- FMPQ's "leaky clip", [I] exact form not public, default slope 0.01). Loss::

    lambda * 255^2 * MSE + bpp          (+ the entropy bottleneck's auxiliary loss, own optimizer)

The result is saved atomically as one torch file holding the codec config, the plan, and the
parametrized state_dict (:func:`save_quantized` / :func:`load_quantized`).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from megabit.utils import atomic_save

from .data import random_crops
from .plan import QuantPlan
from .actquant import ATTR as ACT_ATTR, apply_act_quant, calibrate_act_quant
from .quantize import apply_bits, layer_infos
from .rd import check_codec_contract, rd_terms

__all__ = ["QATConfig", "apply_plan", "prepare_quantized", "qat_finetune", "save_quantized", "load_quantized", "QUANT_FORMAT"]

QUANT_FORMAT = "megabit-fmpq-quantized-codec"


@dataclass(frozen=True)
class QATConfig:
    lmbda: float = 0.0035
    steps: int = 200
    batch: int = 8
    crop: int = 128
    lr: float = 1e-5
    scale_lr: float = 1e-4
    act_lr: float = 1e-3  # activation quantizers' log-scales [I]
    aux_lr: float = 1e-3
    leak: float = 0.01
    clip: float = 1.0
    amp: str = "none"  # "bf16" | "none"
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QATConfig":
        return cls(**d)


def prepare_quantized(model: nn.Module, plan: QuantPlan, leak: float = 0.01, learn_scale: bool = True,
                      calib: Tensor | None = None) -> nn.Module:
    """Check the plan matches the model's layers and apply its bit-widths (in place); with
    ``plan.act_bits`` also the layers' input quantizers, calibrated on ``calib`` when given."""
    check_codec_contract(model)
    have = {li.name: li for li in layer_infos(model)}
    for li in plan.layers:
        if li.name not in have:
            raise ValueError(f"plan layer {li.name} not in the model")
        if have[li.name].n_weights != li.n_weights:
            raise ValueError(f"plan layer {li.name} has {li.n_weights} weights, the model's has {have[li.name].n_weights}")
    apply_plan(model, plan, leak=leak, learn_scale=learn_scale)
    if plan.act_bits is not None and calib is not None:
        calibrate_act_quant(model, calib)
    return model


def apply_plan(model: nn.Module, plan: QuantPlan, leak: float = 0.0, learn_scale: bool = False) -> nn.Module:
    """The plan's weight quantizers (its bit-widths and scale granularity) and, with ``plan.act_bits``,
    its input quantizers, on ``model`` in place (scales as initialised; a state_dict load sets them)."""
    apply_bits(model, plan.bits, leak=leak, learn_scale=learn_scale, granularity=plan.granularity)
    if plan.act_bits is not None:
        apply_act_quant(model, list(plan.bits), plan.act_bits, leak=leak)
    return model


def qat_finetune(model: nn.Module, images: list[Tensor], cfg: QATConfig,
                 log: Callable[[dict[str, Any]], None] | None = None, log_every: int = 25) -> list[dict[str, Any]]:
    """Fine-tune an already :func:`prepare_quantized` model in place; returns the logged history.

    Deterministic for a given ``cfg.seed``: the crops come from a seeded generator and the training
    noise of the entropy models (drawn from torch's global RNG) from a forked, seeded global RNG, so
    the result does not depend on what the process ran before (the caller's RNG state is restored).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _qat_loop(model, images, cfg, log, log_every)


def _qat_loop(model: nn.Module, images: list[Tensor], cfg: QATConfig,
              log: Callable[[dict[str, Any]], None] | None, log_every: int) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(cfg.seed)
    scales = [p for n, p in model.named_parameters() if n.endswith(".scale") and "parametrizations" in n]
    acts = [p for n, p in model.named_parameters() if n.endswith(f"{ACT_ATTR}.log_scale")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    ids = {id(p) for p in scales + acts + aux}
    main = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    groups = [{"params": main, "lr": cfg.lr}]
    if scales:
        groups.append({"params": scales, "lr": cfg.scale_lr})
    if acts:
        groups.append({"params": acts, "lr": cfg.act_lr})
    opt = torch.optim.Adam(groups)
    aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr) if aux else None
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.amp == "bf16" else nullcontext()
    hist: list[dict[str, Any]] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        x = random_crops(images, cfg.batch, cfg.crop, gen)
        with amp:
            out = model(x)
        bpp, mse = rd_terms(out, x)
        loss = cfg.lmbda * 255**2 * mse + bpp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main, cfg.clip)
        opt.step()
        _reapply_masks(model)
        if aux_opt is not None:
            al = model.aux_loss() if hasattr(model, "aux_loss") else None
            if al is not None:
                aux_opt.zero_grad(set_to_none=True)
                al.backward()
                aux_opt.step()
        if step % log_every == 0 or step == cfg.steps:
            rec = {"step": step, "loss": float(loss.detach()), "bpp": float(bpp.detach()),
                   "psnr": 10 * math.log10(1 / max(float(mse.detach()), 1e-10)),
                   "seconds": round(time.perf_counter() - t0, 1)}
            hist.append(rec)
            if log is not None:
                log(rec)
    model.eval()
    return hist


@torch.no_grad()
def _reapply_masks(model: nn.Module) -> None:
    """Keep masked (causal) convolutions causal under a weight parametrization.

    CompressAI's ``MaskedConv2d`` masks with ``self.weight.data *= self.mask`` inside ``forward``;
    with a parametrized weight that writes into a temporary, so gradients would reach the masked taps
    of the stored weight. Zeroing them after every step keeps both megabit's and CompressAI's
    context models causal (a zero weight quantizes to code 0).
    """
    from torch.nn.utils import parametrize

    for m in model.modules():
        mask = getattr(m, "mask", None)
        if isinstance(mask, Tensor) and parametrize.is_parametrized(m, "weight"):
            orig = m.parametrizations.weight.original
            if orig.shape == mask.shape:
                orig.mul_(mask.to(orig.dtype))


def save_quantized(path: str | os.PathLike, model: nn.Module, plan: QuantPlan, codec_config: dict[str, Any],
                   **meta: Any) -> None:
    atomic_save({"format": QUANT_FORMAT, "version": 1, "config": codec_config, "plan": plan.to_dict(),
                 "state_dict": model.state_dict(), **meta}, path)


def load_quantized(path: str | os.PathLike) -> tuple[nn.Module, QuantPlan, dict[str, Any]]:
    """Rebuild a codec saved by :func:`save_quantized` or packed by ``megabit fmpq pack`` (a ``.mbit``
    file: :func:`megabit.fmt.mbit_lic.read_lic_mbit`), in eval mode with its CDF tables built."""
    from megabit.fmt.mbit import is_mbit
    from megabit.fmt.mbit_lic import read_lic_mbit
    from megabit.models.lic import LICConfig, build_codec

    if is_mbit(path):
        return read_lic_mbit(path)

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a readable torch file ({type(e).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != QUANT_FORMAT:
        raise ValueError(f"{path}: not a megabit FMPQ quantized codec")
    plan = QuantPlan.from_dict(obj["plan"])
    model = build_codec(LICConfig.from_dict(obj["config"]))
    apply_plan(model, plan)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match its config: {str(e).splitlines()[0]}") from None
    model.eval()
    model.update(force=True)
    return model, plan, {k: v for k, v in obj.items() if k != "state_dict"}
