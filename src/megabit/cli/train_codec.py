"""``megabit train-codec --data-root photos/ --out runs/codec [--minutes F Q B R] [--resume]``.

Same as ``recipes/codec_train.py`` (which produced the bundled model)."""

from __future__ import annotations

import argparse
import json

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megabit train-codec", description="Train the patch codec (3 stages, CPU, time-budgeted).")
    p.add_argument("--data-root", required=True, help="training images (same-size crops, e.g. shared/data/photos)")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, metrics.jsonl, model.pt)")
    p.add_argument("--minutes", type=float, nargs=4, default=[7.0, 5.0, 2.0, 8.0], metavar=("FLOAT", "QAT_BN", "QAT_BSN", "REFINE"),
                   help="wall-clock minutes per stage")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after-min", type=float, default=None, help="end this session early (resume later)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loss", choices=["mse", "ms-ssim"], default="mse",
                   help="ms-ssim: 1 - MS-SSIM in the refine stage (patch stages stay MSE)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: only where the CPU has native bf16)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="continue from a finished model (bundled name or model.pt); with the default --init-stage refine "
                        "the encoder is frozen and only the REFINE minutes are used")
    p.add_argument("--init-stage", choices=["refine", "qat_bsn"], default="refine",
                   help="with --init: refine (decoder only, same codes) or qat_bsn (QAT_BSN then REFINE minutes: "
                        "encoder and decoder train, a new model) [I]")
    p.add_argument("--lr-qat", type=float, default=0.5,
                   help="encoder learning rate in the QAT stages, as a fraction of the float stage's 2e-3")
    p.add_argument("--init-refine", default=None, metavar="MODEL",
                   help="fresh run whose refinement module starts from MODEL's (bundled name or model.pt) [I]")
    p.add_argument("--binarize", choices=["ste", "stochastic"], default="ste",
                   help="code binarization in the float stage: sign STE, or a +-1 draw with mean tanh(z)")
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda or cuda:N")
    p.add_argument("--lr-refine-dec", type=float, default=0.2,
                   help="g_s learning rate in the refine stage, as a fraction of its lr")
    p.add_argument("--code-context", type=int, default=0, metavar="WIDTH",
                   help="add a cross-patch code context module of this width to the decoder (fresh runs, or "
                        "added zero-initialised to an --init model); it trains in the refine stage [I]")
    p.add_argument("--bsn-init", choices=["quantile", "fit"], default="fit",
                   help="encoder BN->BSN conversion: fit shifts and offsets to the BN encoder's codes on "
                        "--bsn-calib-patches training patches [I] (default), or quantile of the BN scales "
                        "(the paper's reading; the bundled codecs')")
    p.add_argument("--bsn-calib-patches", type=int, default=4096, metavar="N")
    p.add_argument("--tiny", action="store_true", help="tiny model (smoke tests)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from pathlib import Path

    from ..codec.train import TrainCodecConfig, train_codec
    from ..models.patch_codec import PatchCodecConfig

    if not Path(a.data_root).is_dir():
        raise ValueError(f"not a folder: {a.data_root}")
    tcfg = TrainCodecConfig(minutes=tuple(a.minutes), threads=a.threads, loss=a.loss, bf16=a.bf16,
                            init=a.init, lr_refine_dec=a.lr_refine_dec, device=a.device,
                            binarize=a.binarize, init_refine=a.init_refine,
                            init_stage=a.init_stage, lr_qat=a.lr_qat,
                            code_context=a.code_context if a.init else 0,
                            bsn_init=a.bsn_init, bsn_calib_patches=a.bsn_calib_patches)
    if a.code_context < 0:
        raise ValueError(f"--code-context must be >= 0, got {a.code_context}")
    mcfg = (PatchCodecConfig.tiny() if a.tiny else PatchCodecConfig()).with_(code_context=a.code_context)
    res = train_codec(a.data_root, a.out, tcfg, mcfg, resume=a.resume,
                      stop_after_s=None if a.stop_after_min is None else 60 * a.stop_after_min)
    print(json.dumps({k: v for k, v in res.items() if k != "metrics"}, indent=1))
    return 0
