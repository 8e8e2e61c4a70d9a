"""Recipe: fine-tune a finished codec's NQE encoder toward the codes that the encoder-side search finds.

Session 6 measured that the search (``megabit.codec.search``) finds codes worth +1.4..1.8 dB on
Kodak for the *same* decoder: the decoder can deliver more than the encoder asks of it. This
experiment asks whether the 1-Mbit encoder can learn those codes. The decoder (``g_s`` and the
refinement) is frozen, so every file it decodes stays valid; only the quantized encoder (HEQ
weights, HWMSB activations, BSN) is trained, on random 32x32 training patches, one rate per batch
(cycling 128/256/512 bits):

    t     = search_codes(g_s, x, sign(z), rate, steps=S)        # started from the encoder's own code
    loss  = 255^2 MSE(g_s(sign_ste(z)), x) + w * 255 * mean(relu(margin - z * t))

``--distill 0`` is the control: the same encoder-only fine-tuning with no teacher. Compare the two at
equal wall-clock minutes (what the search costs is part of the method). [I] choices: the hinge of
the QAT stage (margin 0.5) with the search's code instead of the float encoder's, search settings
of the sender-side mode (init 0.05, lr 0.02), ``S`` = 10 per batch to keep steps cheap.

Same train/validation split as ``megabit train-codec`` (photos/, permutation seed 1234, 16 held-out
images, 128x128 centre crops). Never trains on Kodak or CLIC. Run folder: ``metrics.jsonl``,
``checkpoint.pt`` (``--resume``), ``model.pt`` (bit table refitted to the new codes), ``result.json``.

    python recipes/codec_search_distill.py --data-root ../shared/data/photos --out runs/distill \\
        --minutes 30 [--distill 0.05 --search-steps 10] [--init codec-nested-v3] [--resume]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from megabit.codec.entropy_model import fit_bit_probs
from megabit.codec.search import SearchConfig, search_codes
from megabit.codec.train import _lr_at, load_init, save_codec, split_train_val, validate
from megabit.data.images import load_folder, random_crops
from megabit.quant.ste import sign_ste
from megabit.utils import atomic_save, atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", default="codec-nested-v3", help="bundled codec name or a model.pt")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4, help="encoder Adam lr (cosine decay to 5 %%)")
    ap.add_argument("--distill", type=float, default=0.05, help="hinge weight toward the searched code; 0 = control")
    ap.add_argument("--margin", type=float, default=0.5)
    ap.add_argument("--search-steps", type=int, default=10)
    ap.add_argument("--search-lr", type=float, default=0.02)
    ap.add_argument("--search-init", type=float, default=0.05)
    ap.add_argument("--n-val", type=int, default=16)
    ap.add_argument("--val-every-s", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if not (a.minutes > 0 and a.batch >= 1 and a.lr >= 0 and a.distill >= 0 and a.search_steps >= 1 and a.n_val >= 1):
        ap.error("need --minutes > 0, --batch >= 1, --lr >= 0, --distill >= 0, --search-steps >= 1, --n-val >= 1")
    torch.set_num_threads(a.threads)
    try:
        model, init_obj = load_init(a.init)
        images = load_folder(a.data_root)
    except (ValueError, OSError) as e:
        ap.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    if images.shape[0] <= a.n_val or min(images.shape[2:]) < 32:
        ap.error(f"{a.data_root}: need more than --n-val {a.n_val} images of at least 32x32 pixels")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = split_train_val(images, a.n_val)  # train_codec's split
    scfg = SearchConfig(steps=a.search_steps, lr=a.search_lr, init=a.search_init)

    for p in list(model.g_s.parameters()) + list(model.refine.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.g_a.parameters(), lr=a.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(a.seed)
    ck = out / "checkpoint.pt"
    state = {"step": 0, "elapsed": 0.0, "metrics": []}
    if a.resume and ck.exists():
        st = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        state = st["state"]
        gen.set_state(st["gen"])
        print(f"resumed at step {state['step']} ({state['elapsed']:.0f}s)", flush=True)
    else:
        v0 = validate(model, val)
        state["metrics"].append({"step": 0, "train_min": 0.0, "val_psnr": v0, "n_val": int(val.shape[0])})
        print(json.dumps(state["metrics"][-1]), flush=True)
    rates = list(model.cfg.rates)
    budget = a.minutes * 60
    t0 = time.time() - state["elapsed"]
    last_val = time.time()
    acc = {"mse": 0.0, "hinge": 0.0, "flip": 0.0, "gain_db": 0.0, "n": 0}
    with open(out / "metrics.jsonl", "a") as mlog:
        while state["elapsed"] < budget:
            for g in opt.param_groups:
                g["lr"] = _lr_at(a.lr, state["elapsed"] / budget)
            r = rates[state["step"] % len(rates)]
            k = model.cfg.channels_for(r)
            x = random_crops(train, a.batch, 32, gen).float()
            model.eval()
            model.g_a.train()  # HEQ steps follow the weights, as in the QAT stages; decoder frozen in eval mode
            z = model.g_a.pre_sign(x)
            codes = sign_ste(z.float())
            rec = model.decode_patches(codes, r)  # drops the channels beyond the rate
            mse = F.mse_loss(rec.float() * 255.0, x)
            loss = mse
            if a.distill > 0:
                start = codes[:, :k].detach()
                t, t_mse = search_codes(model, x / 255.0, start, r, scfg)
                hinge = F.relu(a.margin - z[:, :k].float() * t).mean()
                loss = loss + a.distill * 255.0 * hinge
                acc["hinge"] += float(hinge.detach())
                acc["flip"] += float((t != start).float().mean())
                acc["gain_db"] += 10 * float(torch.log10(mse.detach() / 255.0**2 / t_mse.mean().clamp_min(1e-12)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc["mse"] += float(mse.detach())
            acc["n"] += 1
            state["step"] += 1
            state["elapsed"] = time.time() - t0
            done = state["elapsed"] >= budget
            if time.time() - last_val > a.val_every_s or done:
                n = max(1, acc["n"])
                rec_m = {"step": state["step"], "train_min": round(state["elapsed"] / 60, 2),
                         "val_psnr": validate(model, val if done else val[:8]), "n_val": int(val.shape[0] if done else 8),
                         "train_mse": round(acc["mse"] / n, 2), "hinge": round(acc["hinge"] / n, 4),
                         "teacher_bits_flipped": round(acc["flip"] / n, 4), "teacher_gain_db": round(acc["gain_db"] / n, 3)}
                acc = dict.fromkeys(acc, 0.0)
                acc["n"] = 0
                state["metrics"].append(rec_m)
                mlog.write(json.dumps(rec_m) + "\n")
                mlog.flush()
                print(json.dumps(rec_m), flush=True)
                atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                             "gen": gen.get_state()}, ck)
                last_val = time.time()
    model.eval()
    bit_probs = fit_bit_probs(model, train, torch.Generator().manual_seed(a.seed))
    prior = float(init_obj.get("train", {}).get("train_minutes", 0.0))
    final = {"val_psnr": validate(model, val), "val_psnr_no_refine": validate(model, val, refine=False),
             "val_psnr_init": state["metrics"][0]["val_psnr"], "steps": state["step"],
             "minutes": round(state["elapsed"] / 60, 2), "train_minutes": round(prior + state["elapsed"] / 60, 2),
             "init": str(a.init), "args": vars(a), "command": " ".join([sys.executable, *sys.argv]),
             "hardware": {"cpu": platform.processor() or platform.machine(), "threads": a.threads,
                          "torch": torch.__version__}}
    save_codec(model, out / "model.pt", {"bit_probs": bit_probs, "train": {k: final[k] for k in ("val_psnr", "train_minutes", "init")}})
    atomic_write_text(out / "result.json", json.dumps({**final, "metrics": state["metrics"]}, indent=2))
    print(json.dumps({k: final[k] for k in ("val_psnr", "val_psnr_init", "steps", "minutes")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
