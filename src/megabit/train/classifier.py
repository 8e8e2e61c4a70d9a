"""Two-phase QAT training of the NQE classifier (phase 1 BatchNorm, phase 2 Bit-Shift Norm).

Recipe (fast-CIFAR style, tuned for a 2-core CPU): AdamW with a one-cycle schedule per phase
(linear warm-up, linear decay to zero), label smoothing, random translate + flip on uint8
tensors, bf16 autocast + channels_last, optional torch.compile, flip test-time augmentation.
The paper trains 100 + 120 epochs on a GPU; both phase lengths are configurable.

Run directory layout: ``config.json``, ``metrics.jsonl`` (one JSON line per epoch),
``checkpoint.pt`` (atomic, every epoch; ``resume=True`` continues from it), ``bn_end.pt`` (the
quantized BN-mode model at the end of phase 1, before the BSN conversion) and ``model.pt``
(the final small file: config + state_dict). Multi-process: launched under ``torchrun`` the
loop uses torch.distributed (gloo on CPU) with DistributedDataParallel, each rank taking its
shard of every batch. On a GPU (``device="auto"`` picks it; NCCL under torchrun) batches are
augmented on the CPU and moved to the device; TF32 is off so that BSN-mode sums stay integer-exact.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..data.cifar import Split, batches, random_crop_flip, tta_views
from ..models.nqe import NQE, NQEConfig, get_preset
from ..utils import atomic_save, atomic_write_text, quiet_item_graph_break, resolve_device, use_bf16

__all__ = ["TrainConfig", "train_classifier", "evaluate", "load_classifier", "load_teacher", "save_classifier", "distillation_loss",
           "init_for_finetune", "fit_head_temperature"]


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "nqe-1mbit"
    epochs_bn: int = 60
    epochs_bsn: int = 24
    batch_size: int = 256
    lr: float = 2e-3
    lr_bsn: float = 5e-4
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    warmup_frac: float = 0.15
    bf16: bool | None = None  # None: auto (native bf16 only; emulated bf16 is ~10x slower)
    compile: bool = True
    tta: bool = True
    # [I] test-set evaluation every N epochs (always after each phase's last epoch): a quantized
    # net's exact fp32 evaluation costs ~60 % of a training epoch on 2 CPU cores
    eval_every: int = 1
    seed: int = 0
    quantize: bool = True  # False: the same architecture in float (ablation)
    norm: str = "bn"  # "bn" then BSN; "bn-only" keeps BatchNorm for the whole budget (ablation)
    limit_train: int | None = None
    limit_test: int | None = None
    threads: int | None = None
    warmup_bsn: float | None = None  # warm-up fraction of the BSN phase; None: warmup_frac (0: start at lr_bsn)
    teacher: str | None = None  # a classifier model file (e.g. the float run's model.pt) to distil from
    kd_alpha: float = 0.7  # loss = (1 - a) CE(label-smoothed) + a T^2 KL(teacher_T || student_T)  [I]
    kd_temperature: float = 4.0
    device: str = "auto"  # auto: the (local-rank) GPU when CUDA is available, else the CPU
    # Fine-tuning: start from a trained classifier (bundled name, .mbit or model.pt) instead of
    # random weights. A BSN-mode start trains the BSN phase only (epochs_bn must be 0). [I] The
    # start's quantizer steps are kept fixed (momentum init_step_momentum = 0), so step 0 has
    # exactly the start's integer codes; a .mbit start has no latent weights, so they are
    # rebuilt at their bin centres on a Kaiming-sized scale and the head's softmax temperature
    # (not stored in a .mbit) is refitted on training images.
    init: str | None = None
    init_step_momentum: float = 0.0
    # [I] with init: rebuild the start in this preset's layer table (its weight shapes must equal the
    # start's; pool positions may differ, e.g. a nqe-1mbit float twin as the start of nqe-1mbit-hr).
    # None: the start's own layer table.
    init_preset: str | None = None
    # BN -> BSN conversion: "quantile" (the paper's reading: shift from the bsn_quantile of the BN
    # scales, offsets on the middle threshold) or "fit" ([I] ours: shift and offsets fitted layer by
    # layer to the BN network's activation codes on the first bsn_calib_images training images).
    # Default "fit" since session 30: same BN-phase end, same BSN phase, 87.19 % vs 86.62 % final
    # (results/nqe_1mbit_s30_bn40.json vs results/nqe_1mbit_s30_quantile.json; one seed)
    bsn_init: str = "fit"
    bsn_calib_images: int = 1000
    # positions per channel the fit sees, drawn from all calibration positions ([I]; 4096 until session 37,
    # whose A/B on the sample: results/nqe_bsn_samples_s37_s35_4096.json, _32768.json)
    bsn_calib_samples: int = 4096
    bsn_calib_seed: int = 0  # the draw of those positions (session 37: draws differ by up to 0.2 points)
    bsn_fit_loss: str = "mse"  # "mse" or "mismatch" of the activation codes
    # [I] beyond the paper (default: its layer-shared shift): the BSN the conversion produces,
    # "layer" or "channel" shifts, with a bsn_mantissa_bits-bit mantissa each (megabit.norm.bsn);
    # bsn_offset_bits None keeps the model config's offset width
    bsn_granularity: str = "layer"
    bsn_mantissa_bits: int = 0
    bsn_offset_bits: int | None = None
    # [I] beyond the paper: an exponential moving average of the weights over the BN phase (decay per
    # step; 0 = off, torch.optim.swa_utils.AveragedModel). At the BN phase's end the average gets the
    # live model's buffers (quantizer steps), its BatchNorm statistics are re-estimated on ema_bn_images
    # training images (reestimate_bn), it is evaluated (notes: ema_accuracy) and saved as ema_bn_end.pt;
    # the run itself goes on with the live weights (convert the average with recipes/nqe_bn_reestimate.py --convert).
    ema_decay: float = 0.0
    ema_bn_images: int = 10000
    # [I] beyond the paper (Martinez et al. 2020, "Training binary neural networks with real-to-binary
    # convolutions": activations first, then weights): the first epochs_act epochs of the BN phase's budget
    # run before it with quantized activations and float weights (the conv blocks' latent weights, the head
    # quantized), their own one-cycle schedule at lr; entering and leaving that stage re-estimates BatchNorm
    # (and, when leaving, sets the weight quantizers' steps afresh) on stage_bn_images training images. 0: off
    epochs_act: int = 0
    stage_bn_images: int = 5000

    def bsn_fields(self) -> dict:
        """The NQEConfig fields the BN -> BSN conversion sets."""
        d = {"bsn_granularity": self.bsn_granularity, "bsn_mantissa_bits": self.bsn_mantissa_bits}
        return d | ({"offset_bits": self.bsn_offset_bits} if self.bsn_offset_bits is not None else {})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def save_classifier(model: NQE, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Small shippable file: config JSON + state dict (fp32 latent weights; codes derive from them)."""
    atomic_save({"format": "megabit-nqe", "config": model.cfg.to_dict(), "state_dict": model.state_dict(),
                 "extra": extra or {}}, path)


def _load_file(path: str | os.PathLike, what: str = "model"):
    """torch.load (weights only) with one-line ValueErrors for a missing or non-torch file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such {what} file") from None
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a megabit model file ({type(e).__name__})") from None


def load_classifier(path: str | os.PathLike, obj=None) -> NQE:
    obj = _load_file(path) if obj is None else obj
    if not isinstance(obj, dict) or obj.get("format") not in ("megabit-nqe", "megabit-nqe-ckpt"):
        raise ValueError(f"{path}: not a megabit NQE model file")
    cfg = NQEConfig.from_dict(obj["config"] if "config" in obj else obj["model_config"])
    model = NQE(cfg)
    sd = obj["state_dict"] if "state_dict" in obj else obj["model"]
    sd = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in sd.items()}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match its config ({str(e).splitlines()[0]})") from None
    model.eval()
    return model


def load_teacher(path: str | os.PathLike) -> torch.nn.Module:
    """A distillation teacher: a classifier model file (NQE, e.g. a ``--float`` run) or a
    ``megabit train-teacher`` file (:class:`~megabit.models.teacher.AirbenchTeacher`)."""
    from ..models.teacher import TEACHER_FORMAT, load_teacher_file

    obj = _load_file(path, "teacher")
    if isinstance(obj, dict) and obj.get("format") == TEACHER_FORMAT:
        return load_teacher_file(obj, path)
    return load_classifier(path, obj)


@torch.no_grad()
def init_for_finetune(spec: str | os.PathLike, step_momentum: float = 0.0,
                      calib: tuple[torch.Tensor, torch.Tensor] | None = None,
                      arch: NQEConfig | None = None) -> NQE:
    """A trained classifier prepared as the start of a fine-tune (see ``TrainConfig.init``).

    ``arch``: rebuild the start with this config's layer table (``TrainConfig.init_preset``); the
    weights must fit it shape for shape (only where the max-pools sit may differ).

    A float classifier (``--float`` run) becomes the start of a full QAT run instead: see
    :func:`quantize_float_start` (``calib``: uint8 training images and labels for its calibration).

    Its integer codes (and, in BSN mode, shifts and offsets) are unchanged; the quantizers'
    step momentum is set to ``step_momentum``. Latent weights that are bare codes (a model
    rebuilt from a ``.mbit``: every step is 1) are rescaled with their step to ``sqrt(2 / fan_in)``
    per code unit (Kaiming size), so one learning rate means what it means in training from scratch.
    """
    from ..hub import resolve_classifier

    src, _ = resolve_classifier(spec)
    if arch is not None and arch.layers != src.cfg.layers:
        def shape(c: NQEConfig, grid: bool) -> list[tuple]:
            return [(l.out, l.groups, l.kernel) + ((l.levels,) if grid else ()) for l in c.layers]

        # a float start has no grid yet: its layers may be given any levels and step rules
        if shape(arch, src.cfg.quantize) != shape(src.cfg, src.cfg.quantize):
            raise ValueError(f"{spec}: its weights do not fit the layers of {arch.name or 'the preset'} "
                             "(channels, levels, groups or kernels differ; only pool positions may, and a float "
                             "start's levels)")
        moved = NQE(src.cfg.with_(layers=arch.layers, name=arch.name))
        moved.load_state_dict(src.state_dict())
        src = moved.eval()
    if not src.cfg.quantize:
        if calib is None:
            raise ValueError(f"{spec}: a float model; starting QAT from it needs calibration images")
        return quantize_float_start(src, *calib)
    model = NQE(src.cfg.with_(step_momentum=step_momentum))
    model.load_state_dict(src.state_dict())
    from_codes = all(bool((q.step == 1.0).all()) for _, q, _ in model.quantizers() if q.spec.levels)
    if from_codes:
        for _, q, w in model.quantizers():
            if not q.spec.levels:
                continue
            s = math.sqrt((2.0 if w.dim() > 2 else 1.0) / w[0].numel())
            w.mul_(s)
            q.step.fill_(s)
    return model


def _clip_for_codes(y: torch.Tensor, bits: int, mode: str) -> float:
    """The clip ``c`` for which the activation codes of ``y / c`` best carry ``relu(y)``: least-squares
    error of ``relu(y) ~ a * codes + b`` (a, b fitted), over a grid of quantiles of the positive part."""
    from ..quant.act import hwmsb_codes

    r = F.relu(y.float().flatten())
    if r.numel() > 1_000_000:  # a fixed subsample keeps the fit cheap
        r = r[torch.randperm(r.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    pos = r[r > 0]
    if pos.numel() == 0:
        return 1.0
    best, best_c = float("inf"), 1.0
    for q in torch.linspace(0.5, 0.999, 40).tolist():
        c = float(torch.quantile(pos, q))
        if c <= 0:
            continue
        m = hwmsb_codes(r / c, bits, mode)
        A = torch.stack([m, torch.ones_like(m)], 1)
        sol = torch.linalg.lstsq(A, r.unsqueeze(1)).solution
        err = float(((A @ sol).squeeze(1) - r).pow(2).mean())
        if err < best:
            best, best_c = err, c
    return best_c


@torch.no_grad()
def quantize_float_start(src: NQE, calib: torch.Tensor, labels: torch.Tensor, batch_size: int = 250) -> NQE:
    """The quantized (BatchNorm-phase) NQE initialised from a trained float NQE of the same layers.

    [I] Not in the paper (which trains from scratch): the standard QAT start from a float model.
    Latent weights are the float weights (the quantizers' steps are set from them on first use).
    Each block's BatchNorm affine is divided by a per-layer clip ``c`` fitted on the first
    ``batch_size`` images of ``calib`` (float activations) so that the
    2-bit codes of ``BN(x) / c`` carry ``relu(BN(x))`` best (``_clip_for_codes``); one clip per layer
    keeps the next layer's input a uniform rescale, which its BatchNorm absorbs. The BatchNorm
    running statistics are re-estimated on ``calib`` through the quantized network, and the head's
    softmax temperature is fitted on ``(calib, labels)`` (its bias keeps the float bias in logit units).
    """
    if src.cfg.quantize:
        raise ValueError("quantize_float_start expects a float classifier")
    cfg = src.cfg.with_(quantize=True, norm="bn")
    model = NQE(cfg)
    model.load_state_dict(src.state_dict())
    for _, q, _ in model.quantizers():
        q.initialized.fill_(False)
    src.eval()
    x = src.prepare_input(calib[:batch_size])
    for blk, qblk in zip(src.blocks, model.blocks):
        acc = F.conv2d(x, blk.weight, None, 1, blk.spec.kernel // 2, 1, blk.spec.groups)
        y = blk.norm(acc)
        c = _clip_for_codes(y, cfg.act_bits, cfg.act_mode)
        qblk.norm.weight.div_(c)
        qblk.norm.bias.div_(c)
        x = F.relu(y)
        if blk.spec.pool:
            x = F.max_pool2d(x, 2)
    # BatchNorm statistics through the quantized network (cumulative average over calib); the quantizers
    # are in training mode here on purpose: their steps are being set from the float weights on first use
    reestimate_bn(model, calib, batch_size, quantizers_train=True)
    b_float = model.head.bias.detach().clone()
    model.head.bias.zero_()
    fit_head_temperature(model, calib, labels, batch_size)
    model.head.bias.copy_(b_float)
    return model


@torch.no_grad()
def reestimate_bn(model: NQE, x: torch.Tensor, batch_size: int = 250, quantizers_train: bool = False,
                  augment: bool = False, seed: int = 0) -> int:
    """Recompute every BatchNorm's running mean and variance through the (quantized) network on ``x``
    (a cumulative average over batches of ``batch_size``, as ``momentum=None``), in place; the model is
    left in eval mode. Returns the number of BatchNorms reset.

    After QAT ([I] not in the NQE paper; Nagel et al. 2022, "Overcoming oscillations in quantization-aware
    training", re-estimate BN after QAT): the running statistics were averaged over the last epochs'
    weights and augmented batches (random crop with zero padding); recomputed here for the final
    quantized weights on ``x`` (``augment=False``: the images as the test sees them). The weight
    quantizers stay in eval mode (their steps unchanged) unless ``quantizers_train``; batch statistics
    depend on ``batch_size`` only through the mean of per-batch variances (unbiased, as in training).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return 0
    model.train() if quantizers_train else model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev)
            model.features(random_crop_flip(xb, generator=gen) if augment else xb)
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.eval()
    return len(bns)


@torch.no_grad()
def fit_head_temperature(model: NQE, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Set the head's ``alpha`` (logits = alpha * integer accumulators) to minimise the cross-entropy
    on ``(x, y)``; the stored integer bias is unchanged. Returns the fitted alpha."""
    model.eval()
    acc = torch.cat([model.decision_logits(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])
    def ce(la: float) -> float:
        return float(F.cross_entropy(acc * math.exp(la), y))
    lo, hi = -20.0, 5.0  # golden-section search on log alpha (CE is unimodal in the scale)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = ce(a), ce(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = ce(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = ce(b)
    la = (lo + hi) / 2
    h = model.head
    b_int = h.int_bias().float()
    h.log_alpha.fill_(la)
    h.bias.copy_(b_int * math.exp(la))  # int_bias() = round(bias / alpha) stays b_int
    return math.exp(la)


@torch.no_grad()
def predict_logits(model: NQE, x: torch.Tensor, batch_size: int = 500, tta: bool | int = True) -> torch.Tensor:
    """Decision scores (:meth:`NQE.decision_logits`: the head's integer accumulators when quantized,
    exact in BSN mode), summed over the test-time views of ``tta`` (a level of
    ``megabit.data.cifar.TTA_LEVELS``; True = 1 = horizontal flip). Use argmax; for probabilities
    call the model itself (it applies the head's softmax temperature)."""
    model.eval()
    dev = next(model.parameters()).device
    score = getattr(model, "decision_logits", model)
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        lo = sum(score(v) for v in tta_views(xb, tta))
        outs.append(lo.float().cpu())
    return torch.cat(outs) if outs else torch.empty(0, model.cfg.num_classes)


def evaluate(model: NQE, data: Split, tta: bool | int = True, batch_size: int = 500) -> dict:
    logits = predict_logits(model, data.x, batch_size, tta)
    pred = logits.argmax(1)
    correct = pred == data.y
    per_class = [float(correct[data.y == c].float().mean()) if (data.y == c).any() else float("nan") for c in range(10)]
    return {"accuracy": float(correct.float().mean()), "per_class": per_class, "n": len(data), "tta": int(tta)}


def distillation_loss(logits: torch.Tensor, t_logits: torch.Tensor, hard_loss: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """Hinton distillation: ``(1 - alpha) hard_loss + alpha T^2 KL(teacher_T || student_T)``."""
    T = temperature
    kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1), reduction="batchmean",
                  log_target=True) * T * T
    return (1 - alpha) * hard_loss + alpha * kd


def _one_cycle(step: int, total: int, warm: float) -> float:
    if warm <= 0:
        return max(0.0, (total - step) / max(1, total))
    w = max(1, int(total * warm))
    return (step + 1) / w if step < w else max(0.0, (total - step) / max(1, total - w))


def _param_groups(model: NQE, lr: float, wd: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd, "lr": lr}, {"params": no_decay, "weight_decay": 0.0, "lr": lr}]


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def set_float_weights(model: NQE, on: bool) -> None:
    """Run the conv blocks on their latent float weights (``on``) or on their quantized codes (the
    first / second stage of :attr:`TrainConfig.epochs_act`)."""
    for blk in model.blocks:
        blk.float_weights = on


def _ddp_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _finish_ema(ema, model: NQE, train: Split, test: Split, cfg: TrainConfig, state: dict, out: Path,
                progress: bool = True) -> None:
    """The BN phase's weight average: the live model's buffers (quantizer steps, BN statistics), BatchNorm
    re-estimated on training images, evaluated (``notes.ema_accuracy``) and saved as ``ema_bn_end.pt``."""
    if ema is None:
        return
    avg = ema.module
    live = dict(model.named_buffers())
    with torch.no_grad():
        for n, b in avg.named_buffers():
            b.copy_(live[n])
    avg = avg.to(memory_format=torch.contiguous_format)
    reestimate_bn(avg, train.x[: cfg.ema_bn_images])
    notes = state.setdefault("notes", {})
    notes["ema_accuracy"] = evaluate(avg, test, cfg.tta)["accuracy"]
    notes["ema_decay"] = cfg.ema_decay
    save_classifier(avg.cpu(), out / "ema_bn_end.pt")
    if progress:
        print(f"EMA of the BN phase (decay {cfg.ema_decay}, BN re-estimated on {min(cfg.ema_bn_images, len(train))} "
              f"images): test {notes['ema_accuracy']:.4f}", flush=True)


def train_classifier(
    cfg: TrainConfig,
    train: Split,
    test: Split,
    out_dir: str | os.PathLike,
    resume: bool = False,
    model_cfg: NQEConfig | None = None,
    progress: bool = True,
) -> dict:
    """Train (both phases), write the run directory, return the final metrics dict."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.eval_every < 1:
        raise ValueError(f"eval_every must be >= 1 (got {cfg.eval_every})")
    if cfg.bsn_granularity not in ("layer", "channel") or not 0 <= cfg.bsn_mantissa_bits <= 3:
        raise ValueError(f"bsn_granularity must be 'layer' or 'channel' and bsn_mantissa_bits 0..3 "
                         f"(got {cfg.bsn_granularity!r}, {cfg.bsn_mantissa_bits})")
    if cfg.bsn_init not in ("quantile", "fit") or cfg.bsn_fit_loss not in ("mse", "mismatch"):
        raise ValueError(f"bsn_init must be 'quantile' or 'fit' and bsn_fit_loss 'mse' or 'mismatch' "
                         f"(got {cfg.bsn_init!r}, {cfg.bsn_fit_loss!r})")
    if cfg.bsn_calib_images < 1:
        raise ValueError(f"bsn_calib_images must be >= 1 (got {cfg.bsn_calib_images})")
    if cfg.bsn_calib_samples < 1:
        raise ValueError(f"bsn_calib_samples must be >= 1 (got {cfg.bsn_calib_samples})")
    if cfg.epochs_act < 0 or cfg.stage_bn_images < 1:
        raise ValueError(f"epochs_act must be >= 0 and stage_bn_images >= 1 (got {cfg.epochs_act}, {cfg.stage_bn_images})")
    if cfg.epochs_act and (not cfg.quantize or not cfg.epochs_bn):
        raise ValueError("epochs_act (float weights, quantized activations) precedes a quantized BN phase: "
                         "it needs a quantized model and epochs_bn > 0")
    if not 0.0 <= cfg.ema_decay < 1.0 or cfg.ema_bn_images < 1:
        raise ValueError(f"ema_decay must be in [0, 1) and ema_bn_images >= 1 (got {cfg.ema_decay}, {cfg.ema_bn_images})")
    rank, world = _ddp_info()
    dev = resolve_device(cfg.device)
    out = Path(out_dir)
    teacher = None
    if cfg.teacher:
        teacher = load_teacher(cfg.teacher).eval().to(dev).to(memory_format=torch.channels_last)
        for p_ in teacher.parameters():
            p_.requires_grad_(False)
        if not (0.0 <= cfg.kd_alpha <= 1.0 and cfg.kd_temperature > 0):
            raise ValueError("kd_alpha must be in [0, 1] and kd_temperature > 0")
    amp = use_bf16(cfg.bf16, dev.type)
    torch.manual_seed(cfg.seed)
    if cfg.init:
        n_cal = min(len(train), 5000)  # calibration images, used only when the start is a float model
        model = init_for_finetune(cfg.init, cfg.init_step_momentum, (train.x[:n_cal], train.y[:n_cal]),
                                  get_preset(cfg.init_preset) if cfg.init_preset else None)
        if not cfg.quantize or cfg.norm == "bn-only":
            raise ValueError("--init fine-tunes a quantized model with its own norm: drop --float / --bn-only")
        if model.cfg.norm == "bsn" and cfg.epochs_bn:
            raise ValueError(f"{cfg.init} is already in BSN mode: fine-tune it with --epochs-bn 0")
        mcfg = model.cfg
        model.to(dev)
    else:
        mcfg = model_cfg or get_preset(cfg.preset)
        mcfg = mcfg.with_(quantize=cfg.quantize, norm="bn")
        model = NQE(mcfg).to(dev)
    out.mkdir(parents=True, exist_ok=True)
    phases = [("bn", cfg.epochs_bn, cfg.lr)] if cfg.epochs_bn else []
    if cfg.epochs_act:
        if model.cfg.norm != "bn":
            raise ValueError(f"{cfg.init} is already in BSN mode: epochs_act needs a BN-phase start")
        phases.insert(0, ("act", cfg.epochs_act, cfg.lr))
    if cfg.quantize and cfg.norm != "bn-only" and cfg.epochs_bsn > 0:
        phases.append(("bsn", cfg.epochs_bsn, cfg.lr_bsn))
    elif cfg.epochs_bsn > 0:  # ablation: spend the same budget with BatchNorm throughout
        phases = [("bn", cfg.epochs_bn + cfg.epochs_bsn, cfg.lr)]
    total_epochs = sum(p[1] for p in phases)

    state = {"epoch": 0, "history": [], "wall": 0.0}
    ckpt_path = out / "checkpoint.pt"
    opt_state = None
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["model_config"]["norm"] == "bsn":
            model.convert_to_bsn(**cfg.bsn_fields())
        model.load_state_dict(ck["model"])
        model.to(dev)
        opt_state, state = ck["optimizer"], ck["state"]
        torch.set_rng_state(ck["rng"])
    ema = None
    if cfg.ema_decay > 0 and cfg.epochs_bn > 0 and model.cfg.norm == "bn":
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=False)
        if resume and ckpt_path.exists() and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
    if cfg.init and state["epoch"] == 0 and rank == 0:
        if model.cfg.norm == "bsn":  # a .mbit stores no softmax temperature; refit it (cheap)
            n = min(len(train), 5000)
            alpha = fit_head_temperature(model, train.x[:n].to(dev), train.y[:n].to(dev))
            state.setdefault("notes", {})["init_alpha"] = alpha
        state.setdefault("notes", {})["init_accuracy"] = evaluate(model, test, cfg.tta)["accuracy"]
    if rank == 0:
        atomic_write_text(out / "config.json", json.dumps({"train": cfg.to_dict(), "model": mcfg.to_dict()}, indent=2))

    gen = torch.Generator().manual_seed(cfg.seed * 1000 + state["epoch"] * 7 + rank)
    steps_per_epoch = len(train) // cfg.batch_size
    if steps_per_epoch == 0:  # batches drop the last partial batch: an epoch would take no step
        raise ValueError(f"{len(train)} training images is fewer than one batch ({cfg.batch_size}); "
                         "use more images or a smaller --batch-size")
    epoch = state["epoch"]
    cur_phase, last_ev = None, None
    while epoch < total_epochs:
        # which phase is this epoch in?
        start = 0
        for phase, n_ep, lr in phases:
            if epoch < start + n_ep:
                break
            start += n_ep
        if cfg.epochs_act and phase in ("act", "bn"):
            set_float_weights(model, phase == "act")
            if epoch == start:  # entering the float-weight stage, or leaving it: the accumulators' scale changes
                if phase == "bn":
                    for blk in model.blocks:  # the conv blocks' steps from their latent weights as they are now
                        blk.quant.initialized.fill_(False)  # (the head ran quantized throughout)
                reestimate_bn(model, train.x[: cfg.stage_bn_images].to(dev), quantizers_train=phase == "bn")
                if rank == 0:
                    r = evaluate(model, test, cfg.tta)
                    state.setdefault("notes", {})[f"{phase}_stage_start"] = r["accuracy"]
                    if progress:
                        print(f"{phase} stage start (BatchNorm re-estimated): test {r['accuracy']:.4f}", flush=True)
        if phase == "bsn" and model.cfg.norm != "bsn":
            if rank == 0:  # the BN-phase end, kept so that conversions can be compared on it later
                save_classifier(model, out / "bn_end.pt")  # (recipes/nqe_bsn_conversion.py)
                _finish_ema(ema, model, train, test, cfg, state, out, progress)
            ema = None
            calib = train.x[: cfg.bsn_calib_images] if cfg.bsn_init == "fit" else None
            model.convert_to_bsn(calib, loss=cfg.bsn_fit_loss, samples=cfg.bsn_calib_samples,
                                sample_seed=cfg.bsn_calib_seed, **cfg.bsn_fields())
            model.to(dev)
            opt_state = None
            if calib is not None:
                state.setdefault("notes", {})["bsn_fit"] = model.bsn_fit
            if rank == 0:
                r = evaluate(model, test, cfg.tta)
                state.setdefault("notes", {})["bsn_after_conversion"] = r["accuracy"]
        model.train()
        if cur_phase != phase:
            cur_phase = phase
            net = model.to(memory_format=torch.channels_last)
            if world > 1:
                net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
            if cfg.compile:
                quiet_item_graph_break()
            fwd = torch.compile(net) if cfg.compile else net
            opt = torch.optim.AdamW(_param_groups(model, lr, cfg.weight_decay), lr=lr, betas=(0.9, 0.99))
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                opt_state = None
        # train one epoch at a time so that each can be checkpointed
        t0 = time.time()
        tot_loss, tot_n, tot_ok = 0.0, 0, 0
        it = batches(len(train), cfg.batch_size, True, gen, drop_last=True)
        bar = tqdm(it, total=steps_per_epoch, desc=f"{phase} {epoch + 1}/{total_epochs}", disable=not progress or rank != 0, leave=False)
        for i, idx in enumerate(bar):
            step = (epoch - start) * steps_per_epoch + i
            warm = cfg.warmup_bsn if phase == "bsn" and cfg.warmup_bsn is not None else cfg.warmup_frac
            f = _one_cycle(step, n_ep * steps_per_epoch, warm)
            for g in opt.param_groups:
                g["lr"] = lr * f
            if world > 1:
                idx = idx[rank::world]
            xb = random_crop_flip(train.x[idx], generator=gen).to(dev, non_blocking=True)
            xb = xb.contiguous(memory_format=torch.channels_last)
            yb = train.y[idx].to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = fwd(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            if teacher is not None:
                # the teacher runs like the student (bf16 autocast, channels_last): in fp32 it cost half a student step
                with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    t_logits = teacher(xb).float()
                loss = distillation_loss(logits.float(), t_logits, loss, cfg.kd_alpha, cfg.kd_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None and phase == "bn":
                ema.update_parameters(model)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {i}")
            tot_loss += loss.item() * len(yb)
            tot_n += len(yb)
            tot_ok += int((logits.argmax(1) == yb).sum())
            if i % 20 == 0:
                bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_ok / tot_n:.3f}")
        train_time = time.time() - t0
        epoch += 1
        state["wall"] += train_time
        if rank == 0:
            do_eval = epoch % cfg.eval_every == 0 or epoch == start + n_ep
            last_ev = evaluate(model, test, cfg.tta) if do_eval else None
            test_acc = last_ev["accuracy"] if last_ev else None
            rec = {"epoch": epoch, "phase": phase, "train_loss": tot_loss / tot_n, "train_acc": tot_ok / tot_n,
                   "test_acc": test_acc, "epoch_s": round(train_time, 1), "img_per_s": round(tot_n * world / train_time, 1),
                   "lr": lr, "quant": model.quant_stats() if cfg.quantize else {}}
            state["history"].append(rec)
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if progress:
                print(f"epoch {epoch}/{total_epochs} [{phase}] loss {rec['train_loss']:.3f} train {rec['train_acc']:.4f} "
                      f"test {'-' if test_acc is None else f'{test_acc:.4f}'} ({train_time:.0f}s, {rec['img_per_s']:.0f} img/s)", flush=True)
            state["epoch"] = epoch
            atomic_save({"format": "megabit-nqe-ckpt", "model": _cpu_state(model), "model_config": model.cfg.to_dict(),
                         "optimizer": opt.state_dict(), "state": state, "rng": torch.get_rng_state(),
                         "ema": ema.state_dict() if ema is not None else None}, ckpt_path)

    if rank == 0 and model.cfg.norm == "bn" and "ema_accuracy" not in state.get("notes", {}):
        _finish_ema(ema, model, train, test, cfg, state, out, progress)  # a BN-only run: the average at its end
    # the loop's last epoch is always evaluated; a resumed run that was already complete is not
    final = (last_ev or evaluate(model, test, cfg.tta)) if rank == 0 else {}
    result = {"accuracy": final.get("accuracy"), "per_class": final.get("per_class"), "epochs": total_epochs,
              "train_wall_s": round(state["wall"], 1), "notes": state.get("notes", {})}
    if rank == 0:
        save_classifier(model.cpu(), out / "model.pt", {"train": cfg.to_dict(), "result": result})
        atomic_write_text(out / "result.json", json.dumps(result, indent=2))
    if world > 1:  # every rank returns only once rank 0's files exist; no rank tears gloo down under another
        dist.barrier()
    return result
