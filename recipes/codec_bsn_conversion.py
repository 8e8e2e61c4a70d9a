"""Recipe: compare the patch encoder's BN -> BSN conversions on a BN-phase codec (no training).

    python recipes/codec_bsn_conversion.py RUN/qat_bn_end.pt --data-root ../shared/data/photos \
        --json results/codec_bsn_conversion.json

RUN/qat_bn_end.pt is written by `megabit train-codec` at the end of its qat_bn stage (the quantized
encoder still in BatchNorm mode, with its decoder). For each conversion (``quantile``: the paper's
reading; ``fit``: [I] shifts and offsets fitted layer by layer to the BN encoder's activation codes
and bits on ``--calib`` random training patches) it reports, on the held-out training photos that
`train-codec` validates on (never Kodak or CLIC), the PSNR per rate right after conversion (the
decoder unchanged) and the fraction of code bits that differ from the BN encoder's.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from megabit.codec.train import load_qat_bn_end, split_train_val, validate
from megabit.data.images import load_folder, random_crops
from megabit.models.patch_codec import PatchCodec, patchify
from megabit.utils import atomic_write_text

ap = argparse.ArgumentParser()
ap.add_argument("model", help="qat_bn_end.pt of a train-codec run")
ap.add_argument("--data-root", required=True, help="the training photos folder (held-out split only is scored)")
ap.add_argument("--calib", type=int, default=4096, help="calibration patches for the fitted conversion")
ap.add_argument("--n-val", type=int, default=16, help="held-out photos (as train-codec's n_val)")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--json", default=None, help="write the results here")
a = ap.parse_args()
torch.set_num_threads(a.threads)
try:
    base, _ = load_qat_bn_end(a.model)
    train, val = split_train_val(load_folder(a.data_root), a.n_val)
except (KeyError, OSError, ValueError, RuntimeError, EOFError) as e:
    sys.exit(f"codec_bsn_conversion: error: {str(e).splitlines()[0]}")
base.eval()
calib = random_crops(train, a.calib, 32, torch.Generator().manual_seed(1))
vpatch = patchify(val.float())
with torch.no_grad():
    base_bits = base.g_a(vpatch)


@torch.no_grad()
def bit_mismatch(m: PatchCodec) -> float:
    return round(float((m.g_a(vpatch) != base_bits).float().mean()), 5)


res = {"model": a.model, "calib_patches": a.calib, "val_images": int(val.shape[0]),
       "data": f"held-out {a.data_root} photos (train-codec's split), centre crops {val.shape[2]}x{val.shape[3]}",
       "bn_psnr": validate(base, val), "methods": {}}
print(f"BN mode: {res['bn_psnr']}", flush=True)
for meth in ("quantile", "fit"):
    m = copy.deepcopy(base)
    t0 = time.time()
    m.convert_to_bsn(calib if meth == "fit" else None)
    conv_s = time.time() - t0
    r = {"psnr": validate(m, val), "bit_mismatch": bit_mismatch(m), "convert_s": round(conv_s, 1),
         "shifts": [int(b.norm.shift) for b in m.g_a.blocks] + [int(m.g_a.code.norm.shift)],
         "fit": getattr(m.g_a, "bsn_fit", [])}
    res["methods"][meth] = r
    print(f"{meth}: psnr {r['psnr']} bit mismatch {r['bit_mismatch']} shifts {r['shifts']} ({conv_s:.0f}s)", flush=True)
if a.json:
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.json, json.dumps(res, indent=2))
