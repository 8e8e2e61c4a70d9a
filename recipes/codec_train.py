"""Recipe: the shipped patch codec (src/megabit/assets/codec-nested.pt), trained on a 2-core CPU.

    nice -n 19 python recipes/codec_train.py --data-root ../shared/data/photos --out runs/codec [--resume]
        [--minutes 7 5 2 8] [--stop-after-min 5] [--threads 1]

Stages (see megabit.codec.train): float encoder + patch decoder on 32x32 patches -> quantized NQE
encoder (QAT with code distillation, BN) -> BSN -> refinement on 128x128 crops. Budgets are wall
minutes per stage; ``--stop-after-min`` ends a session early (checkpoint kept) and ``--resume``
continues, so the schedule can be run as several short sessions on a shared machine.
Training data: photos/ only (Kodak and CLIC are evaluation sets). Equivalent CLI:
``megabit train-codec --data-root ... --out ...``.
"""
import argparse
import json
import sys

import torch

from megabit.codec.train import TrainCodecConfig, train_codec
from megabit.models.patch_codec import PatchCodecConfig

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--minutes", type=float, nargs=4, default=[7.0, 5.0, 2.0, 8.0])
ap.add_argument("--stop-after-min", type=float, default=None)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                help="bf16 autocast (default: only where the CPU has native bf16)")
ap.add_argument("--loss", choices=["mse", "ms-ssim"], default="mse")
ap.add_argument("--init", default=None, metavar="MODEL",
                help="decoder-only continuation from a finished model (bundled name or model.pt): encoder frozen, "
                     "only the REFINE minutes are used")
ap.add_argument("--binarize", choices=["ste", "stochastic"], default="ste",
                help="code binarization in the float stage: sign STE, or a +-1 draw with mean tanh(z)")
ap.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda or cuda:N")
ap.add_argument("--lr-refine-dec", type=float, default=0.2, help="g_s learning rate in the refine stage, as a fraction of its lr")
ap.add_argument("--tiny", action="store_true", help="tiny model (smoke test)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
tcfg = TrainCodecConfig(minutes=tuple(a.minutes), threads=a.threads, bf16=a.bf16, loss=a.loss,
                        init=a.init, lr_refine_dec=a.lr_refine_dec, device=a.device,
                        binarize=a.binarize)
mcfg = PatchCodecConfig.tiny() if a.tiny else PatchCodecConfig()
res = train_codec(a.data_root, a.out, tcfg, mcfg, resume=a.resume,
                  stop_after_s=None if a.stop_after_min is None else a.stop_after_min * 60)
json.dump({k: v for k, v in res.items() if k != "metrics"}, sys.stdout, indent=2)
