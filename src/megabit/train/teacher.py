"""Training of the float distillation teacher (:class:`~megabit.models.teacher.AirbenchTeacher`).

airbench94's recipe: SGD with Nesterov momentum 0.85 on the *summed* label-smoothed (0.2) cross
entropy, batch 1024, learning rate 11.5 and weight decay 0.0153 in airbench's "kilostep" units, BN
biases and the whitening bias at 64x the learning rate (the whitening bias only for the first 3
epochs), a triangular schedule (0.2 → 1 at 20 % → 0), Lookahead (every 5 steps, decay ramping as
``0.95^5 t^3``), flip + 2-pixel translation. [I] Our additions for this CPU: bf16 autocast +
channels_last, per-epoch atomic checkpoints and ``resume``, flip test-time augmentation for the
reported accuracy (as the NQE runs; airbench also adds translations).

Run directory: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``model.pt`` (``megabit-teacher``
file: usable as ``megabit train-classifier --teacher RUN/model.pt``), ``result.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.cifar import Split, batches, random_crop_flip, tta_views
from ..models.teacher import AirbenchTeacher, TeacherConfig, save_teacher
from ..utils import atomic_save, atomic_write_text, resolve_device, use_bf16

__all__ = ["TeacherTrainConfig", "train_teacher"]


@dataclass(frozen=True)
class TeacherTrainConfig:
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 11.5  # airbench units: divided by batch_size * (1 + 1 / (1 - momentum))
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3
    translate: int = 2
    lookahead: bool = True
    bf16: bool | None = None
    compile: bool = True
    tta: bool = True
    eval_every: int = 1
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    widths: tuple[int, int, int] = (64, 256, 256)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TeacherTrainConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


@torch.no_grad()
def _evaluate(model: AirbenchTeacher, data: Split, tta: bool | int, amp: bool, batch_size: int = 1000) -> float:
    model.eval()
    dev = next(model.parameters()).device
    ok = 0
    for i in range(0, len(data), batch_size):
        xb = data.x[i : i + batch_size].to(dev).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            lo = sum(model(v).float() for v in tta_views(xb, tta))
        ok += int((lo.argmax(1).cpu() == data.y[i : i + batch_size]).sum())
    return ok / max(1, len(data))


def train_teacher(cfg: TeacherTrainConfig, train: Split, test: Split, out_dir: str | os.PathLike,
                  resume: bool = False, progress: bool = True) -> dict:
    """Train the teacher, write the run directory, return ``{"accuracy", "epochs", "train_wall_s"}``."""
    from tqdm import tqdm

    if cfg.epochs < 1 or cfg.eval_every < 1:
        raise ValueError(f"epochs and eval_every must be >= 1 (got {cfg.epochs}, {cfg.eval_every})")
    steps_per_epoch = len(train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train)} training images is fewer than one batch ({cfg.batch_size}); "
                         "use more images or a smaller --batch-size")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    amp = use_bf16(cfg.bf16, dev.type)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = AirbenchTeacher(TeacherConfig(widths=cfg.widths))
    model.init_whitening(train.x[:5000])
    model.to(dev).to(memory_format=torch.channels_last)

    kilostep = cfg.batch_size * (1 + 1 / (1 - cfg.momentum))
    lr, wd = cfg.lr / kilostep, cfg.weight_decay * cfg.batch_size / kilostep
    lr_b = lr * cfg.bias_scaler
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    other = [p for n, p in model.named_parameters() if "norm" not in n and "whiten" not in n and p.requires_grad]
    groups = [dict(params=[model.whiten.bias], lr=lr_b, weight_decay=wd / lr_b),
              dict(params=norm_biases, lr=lr_b, weight_decay=wd / lr_b),
              dict(params=other, lr=lr, weight_decay=wd / lr)]
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    total = cfg.epochs * steps_per_epoch
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.lookahead else None

    state = {"epoch": 0, "step": 0, "history": [], "wall": 0.0}
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        if ema is not None and ck.get("ema") is not None:
            ema = {k: v.to(dev) for k, v in ck["ema"].items()}
        torch.set_rng_state(ck["rng"])
    atomic_write_text(out / "config.json", json.dumps({"train": cfg.to_dict(), "model": model.cfg.to_dict()}, indent=2))
    fwd = torch.compile(model) if cfg.compile else model
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + state["epoch"] * 7)
    acc = None
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        model.train()
        if epoch >= cfg.whiten_bias_epochs:
            opt.param_groups[0]["base_lr"] = 0.0
        t0, tot_loss, tot_n = time.time(), 0.0, 0
        it = batches(len(train), cfg.batch_size, True, gen, drop_last=True)
        bar = tqdm(it, total=steps_per_epoch, desc=f"teacher {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for idx in bar:
            step = state["step"]
            t = step / total
            f = 0.2 + 0.8 * t / 0.2 if t < 0.2 else (1 - t) / 0.8
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * f
            xb = random_crop_flip(train.x[idx], pad=cfg.translate, generator=gen).to(dev)
            xb = xb.contiguous(memory_format=torch.channels_last)
            yb = train.y[idx].to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = fwd(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing, reduction="none").sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"teacher loss became {loss.item()} at step {step}")
            state["step"] = step = step + 1
            if ema is not None and (step % 5 == 0 or step == total):
                decay = 1.0 if step == total else 0.95 ** 5 * (step / total) ** 3
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.is_floating_point():
                            ema[k].lerp_(v, 1 - decay)
                            v.copy_(ema[k])
            tot_loss += loss.item()
            tot_n += len(yb)
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}")
        dt = time.time() - t0
        state["wall"] += dt
        state["epoch"] = epoch = epoch + 1
        do_eval = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
        acc = _evaluate(model, test, cfg.tta, amp) if do_eval else None
        rec = {"epoch": epoch, "train_loss": tot_loss / tot_n, "test_acc": acc, "epoch_s": round(dt, 1),
               "img_per_s": round(tot_n / dt, 1)}
        state["history"].append(rec)
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if progress:
            print(f"teacher epoch {epoch}/{cfg.epochs} loss {rec['train_loss']:.3f} test "
                  f"{'-' if acc is None else f'{acc:.4f}'} ({dt:.0f}s, {rec['img_per_s']:.0f} img/s)", flush=True)
        atomic_save({"format": "megabit-teacher-ckpt", "model": {k: v.cpu() for k, v in model.state_dict().items()},
                     "optimizer": opt.state_dict(), "state": state, "rng": torch.get_rng_state(),
                     "ema": None if ema is None else {k: v.cpu() for k, v in ema.items()}}, ckpt_path)
    if acc is None:
        acc = _evaluate(model, test, cfg.tta, amp)
    result = {"accuracy": acc, "epochs": cfg.epochs, "train_wall_s": round(state["wall"], 1), "tta": cfg.tta}
    save_teacher(model.cpu(), out / "model.pt", {"train": cfg.to_dict(), "result": result})
    atomic_write_text(out / "result.json", json.dumps(result, indent=2))
    return result
