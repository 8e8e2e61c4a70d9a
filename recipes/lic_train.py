"""Resumable rate-distortion training of a small learned image codec on a folder of photos.

Loss ``lambda * 255^2 * MSE + bpp`` (+ the entropy bottleneck's auxiliary quantile loss with its own
optimizer), random crops with flips, Adam, optional bf16 autocast (CPU or CUDA), tqdm progress.
The run stops after ``--minutes`` of wall time or ``--steps`` steps, whichever first, and resumes from
``--out`` if it exists (model, optimizers, step, elapsed time and RNG state are in the checkpoint,
written atomically every ``--save-every`` seconds and at the end).

    OMP_NUM_THREADS=1 nice -n 19 python recipes/lic_train.py --data /work/shared/data/photos \
        --arch scale-hyperprior --N 64 --M 96 --lmbda 0.0035 --minutes 8 --out runs/lic/shp_0035.pt
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from megabit.models.lic import LICConfig, build_codec
from megabit.models.lic.checkpoint import CODEC_FORMAT
from megabit.search.data import load_images, random_crops
from megabit.search.rd import rd_terms
from megabit.utils import atomic_save, resolve_device, use_bf16


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--arch", default="scale-hyperprior")
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--M", type=int, default=96)
    p.add_argument("--lmbda", type=float, default=0.0035)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--aux-lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto",
                   help="auto: bf16 only where the CPU has native bf16 (megabit.utils.use_bf16)")
    p.add_argument("--init", default=None,
                   help="start from the weights of another codec checkpoint of the same architecture "
                        "(e.g. a run at another lambda), with fresh optimizers")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (GPU if available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--save-every", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    cfg = LICConfig(a.arch, a.N, a.M)
    model = build_codec(cfg).to(dev)  # before the optimizers load state: it follows the params' device
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=a.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=a.aux_lr)
    gen = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)  # the entropy models' training noise comes from the global RNG
    step, elapsed, log = 0, 0.0, []
    out = Path(a.out)
    if out.exists():
        ck = torch.load(out, map_location="cpu", weights_only=False)
        if LICConfig.from_dict(ck["config"]) != cfg or ck["lmbda"] != a.lmbda:
            raise ValueError(f"{out} holds a different run ({ck['config']}, lambda={ck['lmbda']})")
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        aux_opt.load_state_dict(ck["aux_optimizer"])
        step, elapsed, log = ck["step"], ck["elapsed_s"], ck.get("log", [])
        gen.set_state(ck["rng"])
        if "torch_rng" in ck:
            torch.set_rng_state(ck["torch_rng"])
        print(f"resumed {out} at step {step} ({elapsed / 60:.1f} min)", flush=True)
    elif a.init:
        ck = torch.load(a.init, map_location="cpu", weights_only=False)
        if LICConfig.from_dict(ck["config"]) != cfg:
            raise ValueError(f"--init {a.init} holds a different architecture ({ck['config']})")
        model.load_state_dict(ck["state_dict"])
        print(f"initialised from {a.init} (lambda {ck['lmbda']}, step {ck['step']})", flush=True)
    images = load_images(a.data, min_side=a.crop)
    bf16 = use_bf16(None if a.amp == "auto" else a.amp == "bf16", dev.type)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def save() -> None:
        atomic_save({"format": CODEC_FORMAT, "version": 1, "config": cfg.to_dict(), "lmbda": a.lmbda,
                     "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
                     "aux_optimizer": aux_opt.state_dict(), "step": step, "elapsed_s": elapsed,
                     "rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "log": log, "args": vars(a),
                     "hardware": (f"CPU, torch threads={a.threads}" if dev.type == "cpu"
                                  else torch.cuda.get_device_name(dev)) + f", bf16={bf16}",
                     "init": a.init}, out)

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    stop = {"flag": False}
    # SIGTERM/SIGINT end the run cleanly: the loop exits and the final checkpoint is written
    def _stop(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    budget = a.minutes * 60
    bar = tqdm(total=a.steps if a.steps < 10**9 else None, initial=step, file=sys.stdout, mininterval=10,
               disable=tqdm is None)
    model.train()
    t_start, t_save = time.perf_counter(), time.perf_counter()
    base = elapsed
    ema = None
    while step < a.steps and elapsed < budget and not stop["flag"]:
        x = random_crops(images, a.batch, a.crop, gen).to(dev, non_blocking=True)
        with amp:
            res = model(x)
        bpp, mse = rd_terms(res, x)
        loss = a.lmbda * 255**2 * mse + bpp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, a.clip)
        opt.step()
        aux = model.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        step += 1
        elapsed = base + time.perf_counter() - t_start
        v = (float(loss.detach()), float(bpp.detach()), 10 * math.log10(1 / max(float(mse.detach()), 1e-10)))
        ema = v if ema is None else tuple(0.98 * e + 0.02 * u for e, u in zip(ema, v))
        bar.update(1)
        if step % 50 == 0:
            log.append({"step": step, "elapsed_s": round(elapsed, 1), "loss": ema[0], "bpp": ema[1], "psnr": ema[2],
                        "aux": float(aux)})
            bar.set_postfix(loss=f"{ema[0]:.3f}", bpp=f"{ema[1]:.3f}", psnr=f"{ema[2]:.2f}")
            print(json.dumps(log[-1]), flush=True)
        if time.perf_counter() - t_save > a.save_every:
            save()
            t_save = time.perf_counter()
    bar.close()
    save()
    print(f"done: step {step}, {elapsed / 60:.1f} min -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
