"""`megabit train-classifier --preset nqe-1mbit --data-root DIR --out RUN_DIR [--resume]`.

Phase 1 trains with BatchNorm, phase 2 converts to layer-shared Bit-Shift Normalization and
fine-tunes. Writes config.json, metrics.jsonl, checkpoint.pt (every epoch, atomic) and model.pt.
Multi-process: ``torchrun --nproc-per-node N -m megabit.cli.main train-classifier ...``.
"""

from __future__ import annotations

import argparse
import json
import os


def build_parser() -> argparse.ArgumentParser:
    from megabit.train.classifier import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="megabit train-classifier", description=__doc__)
    p.add_argument("--preset", default=None,
                   help=f"layer table (default {d.preset}; with --init: the start's own, or this preset's "
                        "when given: same weight shapes, e.g. other pool positions)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--epochs-bn", type=int, default=d.epochs_bn)
    p.add_argument("--epochs-bsn", type=int, default=d.epochs_bsn)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-bsn", type=float, default=d.lr_bsn)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--warmup-bsn", type=float, default=d.warmup_bsn,
                   help="warm-up fraction of the BSN phase (default: same as phase 1; 0: none)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune this trained classifier (bundled name, .mbit or model.pt) instead of "
                        "training from scratch; a BSN-mode model needs --epochs-bn 0; a float model (a --float "
                        "run) starts full QAT from its weights, calibrated on the first 5,000 training images")
    p.add_argument("--init-step-momentum", type=float, default=d.init_step_momentum,
                   help="quantizer step EMA during the fine-tune (default 0: keep the start's steps)")
    p.add_argument("--teacher", default=None, help="distil from this classifier model file (e.g. a --float run)")
    p.add_argument("--kd-alpha", type=float, default=d.kd_alpha)
    p.add_argument("--kd-temperature", type=float, default=d.kd_temperature)
    p.add_argument("--float", action="store_true", help="ablation: same architecture, no quantization")
    p.add_argument("--bn-only", action="store_true", help="ablation: keep BatchNorm for the whole budget")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--eval-every", type=int, default=d.eval_every, metavar="N",
                   help="test-set accuracy every N epochs and after each phase's last (default: every epoch)")
    p.add_argument("--bsn-init", choices=("quantile", "fit"), default=d.bsn_init,
                   help="BN->BSN conversion: fit (default, [I] ours: shift and offsets fitted to the BN network's "
                        "activation codes on training images) or quantile (the paper's reading)")
    p.add_argument("--bsn-calib-images", type=int, default=d.bsn_calib_images,
                   help="training images the 'fit' conversion calibrates on")
    p.add_argument("--bsn-calib-samples", type=int, default=d.bsn_calib_samples,
                   help="positions per channel the 'fit' conversion sees, drawn from those images' positions")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help="[I] also keep an EMA of the weights over the BN phase (decay per step, e.g. 0.999; 0 = off): "
                        "BN re-estimated, evaluated and saved as ema_bn_end.pt")
    p.add_argument("--ema-bn-images", type=int, default=d.ema_bn_images,
                   help="training images the EMA model's BatchNorm statistics are re-estimated on")
    p.add_argument("--epochs-act", type=int, default=d.epochs_act, metavar="N",
                   help="[I] two-stage QAT: N epochs with quantized activations and float weights before the BN "
                        "phase (own one-cycle schedule; BatchNorm re-estimated at each switch; default 0 = off)")
    p.add_argument("--bsn-calib-seed", type=int, default=d.bsn_calib_seed,
                   help="seed of the draw of those positions")
    p.add_argument("--bsn-fit-loss", choices=("mse", "mismatch"), default=d.bsn_fit_loss,
                   help="what the 'fit' conversion minimises: squared or 0/1 error of the activation codes")
    p.add_argument("--bsn-scale", choices=("layer", "channel"), default=d.bsn_granularity,
                   help="BSN shifts: one per layer (default, the paper) or one per channel ([I] beyond the paper)")
    p.add_argument("--bsn-mantissa-bits", type=int, default=d.bsn_mantissa_bits, choices=range(4), metavar="B",
                   help="[I] a B-bit mantissa with each BSN shift: scale (1 + m/2^B) 2^-k, a shift-and-add (default 0)")
    p.add_argument("--bsn-offset-bits", type=int, default=None,
                   help="bits of each BSN offset (default: the preset's, 12)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: only where the CPU/GPU has native bf16)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=d.device, help="auto (GPU if available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    import torch.distributed as dist

    from megabit.data import load_cifar10
    from megabit.models.nqe import get_preset
    from megabit.train.classifier import TrainConfig, train_classifier

    if a.preset is not None:
        get_preset(a.preset)  # validate early
    cfg = TrainConfig(preset=a.preset or TrainConfig.preset,
                      init_preset=a.preset if a.init else None, epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn, batch_size=a.batch_size,
                      lr=a.lr, lr_bsn=a.lr_bsn, seed=a.seed, quantize=not a.float,
                      norm="bn-only" if a.bn_only else "bn", compile=not a.no_compile, bf16=a.bf16,
                      threads=a.threads, limit_train=a.limit_train, limit_test=a.limit_test,
                      warmup_bsn=a.warmup_bsn, teacher=a.teacher, kd_alpha=a.kd_alpha,
                      kd_temperature=a.kd_temperature, device=a.device, init=a.init,
                      init_step_momentum=a.init_step_momentum, eval_every=a.eval_every,
                      bsn_init=a.bsn_init, bsn_calib_images=a.bsn_calib_images, bsn_calib_samples=a.bsn_calib_samples, bsn_calib_seed=a.bsn_calib_seed, bsn_fit_loss=a.bsn_fit_loss,
                      bsn_granularity=a.bsn_scale, bsn_mantissa_bits=a.bsn_mantissa_bits,
                      bsn_offset_bits=a.bsn_offset_bits, ema_decay=a.ema_decay, ema_bn_images=a.ema_bn_images,
                      epochs_act=a.epochs_act)
    train = load_cifar10(a.data_root, "train", a.limit_train)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    ddp = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if ddp:
        from megabit.utils import resolve_device

        dist.init_process_group("nccl" if resolve_device(a.device).type == "cuda" else "gloo")
    rank = dist.get_rank() if ddp else 0
    try:
        res = train_classifier(cfg, train, test, a.out, resume=a.resume, progress=not a.quiet)
    finally:
        if ddp:
            dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(res))
    return 0
