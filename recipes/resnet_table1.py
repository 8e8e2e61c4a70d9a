"""Recipe: the quantization-scheme vs entropy study of arXiv 2406.06237 Table I, on CIFAR-10 ResNet-20.

    python recipes/resnet_table1.py --data-root /work/shared/data/cifar10-jpeg-q75 --out runs/table1 \
        --epochs 30 [--schemes float,ternary,...] [--resume] [--threads 2]

Smoke test (proves the pipeline runs; numbers meaningless):

    nice -n 19 python recipes/resnet_table1.py --data-root /work/shared/data/cifar10-jpeg-q75 \
        --out /tmp/t1 --epochs 1 --limit-train 2000 --limit-test 500 --threads 1 --results /tmp/t1/table1.json

For each scheme (float, binary, ternary, 4-level without zero, 5- and 7-level zero-point, and
learned mixed precision with an entropy penalty) it trains ResNet-20 for ``--epochs`` epochs
(SGD + Nesterov, one-cycle LR, bf16 autocast where native, channels_last; resumable per scheme: each scheme has
its own run folder with ``checkpoint.pt`` written every epoch and ``result.json`` when done), then
reports test accuracy, empirical entropy (bits/weight over the 18 body convs and over all
quantized layers), tANS-coded bits/weight (payload, and payload + tables) and the weight-file size
(:func:`megabit.models.resnet.packed_size`). Everything goes to ``--results`` (default
results/table1_resnet20.json) with the hardware, epochs, wall time and the command line.

Data: the paper uses CIFAR-10; the shared copy here (/work/shared/data/cifar10-jpeg-q75) is a
**JPEG quality-75 re-encoding** of CIFAR-10, so accuracies are not directly comparable to
numbers on the original PNG-exact images (JPEG artefacts cost some accuracy).

Mixed precision ([I], the paper's procedure is not public): train half the epochs on a 15-bin
zero-point grid (absmax step) with ``loss = CE + beta · entropy_penalty / N_body``, then choose
each body layer's odd bin count with :func:`megabit.quant.precision.plan_precision` (Lagrangian,
``--plan-lam``), switch the quantizers, and train the rest of the epochs with the penalty on.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from megabit.data import batches, load_cifar10, random_crop_flip
from megabit.fmt.mbit_resnet import write_resnet_mbit
from megabit.models.resnet import (ARCHS, SCHEMES, ResNet, ResNetConfig, apply_levels, arch_config, entropy_report,
                                   packed_size, quantized_layers, scheme_config)
from megabit.quant.entropy_reg import RateController, entropy_penalty, hard_bits_per_weight
from megabit.quant.precision import DEFAULT_CANDIDATES, PrecisionPlan, plan_precision
from megabit.train.classifier import _one_cycle, distillation_loss
from megabit.utils import atomic_save, atomic_write_text, resolve_device, use_bf16

ENTROPY_SCHEMES = ("mixed-entropy",)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True, help="run folder (one subfolder per scheme)")
    ap.add_argument("--results", default="results/table1_resnet20.json")
    ap.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma list of {', '.join(SCHEMES)}")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--warmup-frac", type=float, default=0.1)
    ap.add_argument("--entropy-weight", type=float, default=0.05,
                    help="beta: nats of CE per bit/weight (loss = CE + beta * bits / N_body)")
    ap.add_argument("--temperature", type=float, default=0.3,
                    help="soft-assignment temperature (step units^2); small T stalls the gradient inside bins")
    ap.add_argument("--plan-lam", type=float, default=0.1,
                    help="Lagrangian lambda (relative MSE per bit/weight); 0.01 kept 15 bins everywhere in the smoke run")
    ap.add_argument("--target-bpw", type=float, default=None,
                    help="[I] after the plan, steer beta so the body's code entropy ends near this many bits/weight "
                         "(multiplicative dual ascent, megabit.quant.entropy_reg.RateController); tANS adds ~1%% + tables")
    ap.add_argument("--rate-every", type=int, default=25, help="steps between entropy measurements for --target-bpw")
    ap.add_argument("--rate-gain", type=float, default=0.5, help="log-beta change per relative entropy error")
    ap.add_argument("--rate-ramp", type=float, default=0.0,
                    help="[I] move the target linearly from the plan's entropy to --target-bpw over this fraction of "
                         "the steps after the plan (0: the final target at once)")
    ap.add_argument("--per-channel", action="store_true",
                    help="[I] per-output-channel steps for the quantized body convs (the plan measures them the same way)")
    ap.add_argument("--step-rule", choices=("absmax", "learned"), default=None,
                    help="step rule of the absmax schemes' body convs (4level, 5/7-level zp, mixed-entropy): "
                         "learned = LSQ, a trained step initialized by absmax [I]; default: the scheme's own")
    ap.add_argument("--rate-moves-step", action="store_true",
                    help="with --step-rule learned: the entropy penalty's gradient reaches the step too (default: weights only)")
    ap.add_argument("--teacher", default=None, metavar="MODEL_PT",
                    help="distil from this trained ResNet (e.g. RUN/float/model.pt): loss = (1-a) CE + a T^2 KL")
    ap.add_argument("--init", default=None, metavar="MODEL_PT",
                    help="[I] start every scheme from a trained float ResNet's weights (quantize a pretrained "
                         "model); its quantizer steps are set from the loaded weights")
    ap.add_argument("--kd-alpha", type=float, default=0.7)
    ap.add_argument("--kd-temperature", type=float, default=4.0)
    ap.add_argument("--penalty-samples", type=int, default=None, metavar="N",
                    help="estimate each layer's soft histogram from N random weights per step (unbiased; "
                         "for wide nets, where the full soft assignment costs more than the convs)")
    ap.add_argument("--arch", default="resnet20", choices=sorted(ARCHS),
                    help="body: resnet20 (3x3 blocks, 16-32-64) or resnet18 (4x2 blocks, 64-128-256-512)")
    ap.add_argument("--width", type=int, default=None, help="first-stage channels (scales all stages)")
    ap.add_argument("--candidates", default=",".join(map(str, DEFAULT_CANDIDATES)))
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: only with native bf16; emulated bf16 is ~10x slower)")
    ap.add_argument("--resume", action="store_true", help="continue unfinished schemes, skip finished ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (GPU if available, else CPU), cpu, cuda or cuda:N")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def hardware() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


@torch.no_grad()
def evaluate(model: ResNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    dev = next(model.parameters()).device
    ok = 0
    for i in range(0, len(y), batch_size):
        xb = x[i : i + batch_size].to(dev).contiguous(memory_format=torch.channels_last)
        ok += int((model(xb).argmax(1).cpu() == y[i : i + batch_size]).sum())
    return ok / max(1, len(y))


def make_opt(model: ResNet, a) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": a.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                           lr=a.lr, momentum=0.9, nesterov=True)


def choose_plan(model: ResNet, a) -> PrecisionPlan:
    body = {n: m.weight for n, m in quantized_layers(model, include_edges=False)}
    cands = [int(c) for c in a.candidates.split(",")]
    return plan_precision(body, cands, lam=a.plan_lam, step_rule="absmax", per_channel=a.per_channel)


def ramp_target(final: float, start: float, step: int, plan_step: int, total: int, ramp: float) -> float:
    """Rate target at ``step``: from the plan's entropy down (or up) to ``final`` over ``ramp`` of the
    steps after the plan, then ``final``."""
    if ramp <= 0 or start <= 0:
        return final
    f = min(1.0, max(0.0, (step - plan_step) / max(1.0, ramp * (total - plan_step))))
    return start + (final - start) * f


def load_init_weights(model: ResNet, path: str) -> None:
    """Weights (conv, BN, FC) of a trained ResNet of the same shape; quantizer steps are re-estimated."""
    from megabit.quant.weight import WeightQuantizer

    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        sd = ck["state_dict"]
    except Exception as e:  # noqa: BLE001 - a missing, truncated or foreign file
        raise SystemExit(f"error: --init {path}: not a model.pt written by this recipe ({type(e).__name__})") from None
    sd = {k: v for k, v in sd.items() if not k.endswith((".quant.step", ".quant.initialized"))}
    try:
        model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise SystemExit(f"error: --init {path}: shapes do not match ({str(e).splitlines()[0]})") from None
    missing = [k for k in model.state_dict() if k not in sd and ".quant." not in k]
    if missing:
        raise SystemExit(f"error: --init {path}: missing weights {missing[:3]}")
    for m in model.modules():
        if isinstance(m, WeightQuantizer):
            m.initialized.fill_(False)


def load_teacher(path: str, dev: torch.device) -> ResNet:
    """A trained ResNet from ``model.pt`` (as this recipe writes it), frozen, in eval mode."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    t = ResNet(ResNetConfig.from_dict(ck["config"]))
    t.load_state_dict(ck["state_dict"])
    for p in t.parameters():
        p.requires_grad_(False)
    return t.to(dev, memory_format=torch.channels_last).eval()


def kd_loss(logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor, alpha: float, temp: float) -> torch.Tensor:
    """Hinton distillation with the plain cross-entropy as the hard loss (the classifier trainer's helper)."""
    return distillation_loss(logits, t_logits, F.cross_entropy(logits, y), alpha, temp)


def train_scheme(scheme: str, a, train, test) -> dict:
    from tqdm import tqdm

    run = Path(a.out) / scheme
    run.mkdir(parents=True, exist_ok=True)
    if a.resume and (run / "result.json").exists():
        return json.loads((run / "result.json").read_text())
    torch.manual_seed(a.seed)
    dev = resolve_device(a.device)
    cfg = scheme_config(scheme)
    if a.arch != "resnet20" or a.width is not None:
        cfg = arch_config(cfg, a.arch, a.width)
    if a.per_channel and cfg.levels:
        cfg = cfg.with_(per_channel=True)
    if a.step_rule and cfg.levels and cfg.step_rule == "absmax":
        cfg = cfg.with_(step_rule=a.step_rule)
    model = ResNet(cfg)
    if a.init:
        load_init_weights(model, a.init)
    model = model.to(dev)
    teacher = load_teacher(a.teacher, dev) if a.teacher and scheme != "float" else None
    opt = make_opt(model, a)
    state = {"epoch": 0, "history": [], "wall": 0.0, "plan": None, "beta": a.entropy_weight}
    ck_path = run / "checkpoint.pt"
    if a.resume and ck_path.exists():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        model = ResNet(ResNetConfig.from_dict(ck["config"]))
        model.load_state_dict(ck["model"])
        model.to(dev)
        opt = make_opt(model, a)
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"])
    use_penalty = scheme in ENTROPY_SCHEMES
    n_body = sum(m.weight.numel() for _, m in quantized_layers(model, include_edges=False)) or 1
    switch = max(1, a.epochs // 2)
    steps = len(train.y) // a.batch_size
    total = a.epochs * steps
    gen = torch.Generator().manual_seed(a.seed * 1000 + state["epoch"])
    model = model.to(memory_format=torch.channels_last)

    def do_plan():
        nonlocal model, opt
        plan = choose_plan(model.cpu(), a)
        plan.save(run / "plan.json")
        old = opt.state_dict()
        model = apply_levels(model, plan.levels()).to(dev, memory_format=torch.channels_last)
        opt = make_opt(model, a)
        opt.load_state_dict(old)  # same parameter order: momentum buffers carry over
        state["plan"] = plan.to_dict()
        state["plan_bpw"] = sum(l.n_weights * l.entropy for l in plan.layers) / max(1, sum(l.n_weights for l in plan.layers))
        state["plan_step"] = state["epoch"] * steps
        print(plan.summary(), flush=True)

    state.setdefault("beta", a.entropy_weight)
    ctrl = None
    if use_penalty and a.target_bpw is not None:
        ctrl = RateController(a.target_bpw, max(state["beta"], 1e-3), gain=a.rate_gain)
    amp = use_bf16(a.bf16, dev.type)
    while state["epoch"] < a.epochs:
        ep = state["epoch"]
        if use_penalty and state["plan"] is None and ep == switch:
            do_plan()
        model.train()
        t0 = time.time()
        tl, tn, tok, tbits = 0.0, 0, 0, 0.0
        bar = tqdm(batches(len(train.y), a.batch_size, True, gen, drop_last=True), total=steps,
                   desc=f"{scheme} {ep + 1}/{a.epochs}", disable=a.no_progress, leave=False)
        for i, idx in enumerate(bar):
            f = _one_cycle(ep * steps + i, total, a.warmup_frac)
            for g in opt.param_groups:
                g["lr"] = a.lr * f
            xb = random_crop_flip(train.x[idx], generator=gen).to(dev).contiguous(memory_format=torch.channels_last)
            yb = train.y[idx].to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(xb)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb).float()
                loss = kd_loss(logits.float(), t_logits, yb, a.kd_alpha, a.kd_temperature)
            else:
                loss = F.cross_entropy(logits.float(), yb)
            if ctrl is not None and state["plan"] is not None and i % a.rate_every == 0:
                ctrl.target = ramp_target(a.target_bpw, state.get("plan_bpw", a.target_bpw), ep * steps + i,
                                          state.get("plan_step", 0), total, a.rate_ramp)
                state["beta"] = ctrl.update(hard_bits_per_weight(model.blocks))
            beta = state["beta"]
            if use_penalty and beta > 0:
                bits = entropy_penalty(model.blocks, a.temperature, step_grad=a.rate_moves_step,
                                       max_samples=a.penalty_samples)
                loss = loss + beta * bits / n_body
                tbits += float(bits.detach()) / n_body
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"{scheme}: loss {loss.item()} at epoch {ep + 1} step {i}")
            tl += loss.item() * len(yb)
            tn += len(yb)
            tok += int((logits.argmax(1) == yb).sum())
            if i % 10 == 0:
                bar.set_postfix(loss=f"{tl / tn:.3f}", acc=f"{tok / tn:.3f}")
        dt = time.time() - t0
        state["wall"] += dt
        state["epoch"] = ep + 1
        acc = evaluate(model, test.x, test.y)
        rec = {"epoch": ep + 1, "train_loss": tl / max(1, tn), "train_acc": tok / max(1, tn), "test_acc": acc,
               "soft_bits_per_weight": tbits / max(1, i + 1) if use_penalty else None, "epoch_s": round(dt, 1)}
        if use_penalty:
            rec["beta_end"] = state["beta"]
            rec["hard_bits_per_weight"] = hard_bits_per_weight(model.blocks)
        state["history"].append(rec)
        print(f"[{scheme}] epoch {ep + 1}/{a.epochs} loss {rec['train_loss']:.3f} test {acc:.4f} ({dt:.0f}s)", flush=True)
        atomic_save({"config": model.cfg.to_dict(), "model": {k: v.cpu() for k, v in model.state_dict().items()},
                     "optimizer": opt.state_dict(),
                     "state": state, "rng": torch.get_rng_state()}, ck_path)
    if use_penalty and state["plan"] is None:  # epochs < 2: plan at the end, no fine-tuning after it
        do_plan()
        state["history"].append({"epoch": state["epoch"], "test_acc_after_plan": evaluate(model, test.x, test.y)})

    model = model.cpu()
    acc = evaluate(model, test.x, test.y)
    rep = entropy_report(model, coder="tans")
    size = packed_size(model, report=rep)
    res = {"scheme": scheme, "config": model.cfg.to_dict(), "accuracy": acc, "epochs": a.epochs,
           "train_wall_s": round(state["wall"], 1),
           "entropy_bits_per_weight_body": rep["body"].get("entropy_bits_per_weight"),
           "tans_bits_per_weight_body": rep["body"].get("coded_bits_per_weight"),
           "tans_with_tables_bits_per_weight_body": rep["body"].get("coded_with_tables_bits_per_weight"),
           "raw_bits_per_weight_body": rep["body"].get("raw_bits_per_weight"),
           "entropy_bits_per_weight_all": rep["all"].get("entropy_bits_per_weight"),
           "tans_bits_per_weight_all": rep["all"].get("coded_bits_per_weight"),
           "file_bytes": size["total_bytes"], "size": size, "entropy_report": rep,
           "plan": state["plan"], "history": state["history"]}
    atomic_save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), "result": {"accuracy": acc}},
                run / "model.pt")
    # the real file: what `megabit pack RUN/SCHEME/model.pt` writes (tANS, default table size, one stream)
    res["mbit_bytes"] = write_resnet_mbit(model, run / "model.mbit", meta={"scheme": scheme, "accuracy": acc})
    atomic_write_text(run / "result.json", json.dumps(res, indent=2))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.target_bpw is not None and not (a.target_bpw > 0 and a.entropy_weight > 0):
        ap.error("--target-bpw needs a target > 0 bits/weight and --entropy-weight > 0 (the starting price)")
    if not (0.0 <= a.rate_ramp <= 1.0 and a.rate_every >= 1 and a.rate_gain > 0):
        ap.error("--rate-ramp must be in [0, 1], --rate-every >= 1 and --rate-gain > 0")
    if a.rate_moves_step and a.step_rule != "learned":
        ap.error("--rate-moves-step needs --step-rule learned (other steps are not trained)")
    if a.width is not None and not 1 <= a.width <= 1024:
        ap.error(f"--width must be in 1..1024, got {a.width}")
    if a.penalty_samples is not None and (a.penalty_samples < 1 or a.per_channel):
        ap.error("--penalty-samples needs a positive count and per-tensor steps (no --per-channel)")
    if a.init and not Path(a.init).is_file():
        ap.error(f"--init {a.init}: no such file")
    if a.threads:
        torch.set_num_threads(a.threads)
    schemes = [s.strip() for s in a.schemes.split(",") if s.strip()]
    for s in schemes:
        scheme_config(s)  # fail early on a typo
    t0 = time.time()
    train = load_cifar10(a.data_root, "train", a.limit_train)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    results = {}
    for s in schemes:
        r = train_scheme(s, a, train, test)
        results[s] = r
        print(f"== {s}: acc {r['accuracy']:.4f}  H {r['entropy_bits_per_weight_body']}  "
              f"tANS {r['tans_bits_per_weight_body']}  file {r.get('mbit_bytes', r['file_bytes'])} B", flush=True)
    out = {"study": "arXiv 2406.06237 Table I setting (quantization scheme vs entropy), CIFAR-10 "
                    + (a.arch if a.width is None else f"{a.arch}-w{a.width}"),
           "data": {"train": train.source, "test": test.source, "n_train": len(train.y), "n_test": len(test.y),
                    "note": "JPEG q75 copy of CIFAR-10 when the path says so; not the original PNG-exact images"},
           "hardware": hardware(), "epochs": a.epochs, "wall_s": round(time.time() - t0, 1),
           "command": " ".join([sys.executable, *sys.argv]), "args": vars(a),
           "columns": {"entropy_bits_per_weight_body": "empirical entropy of the body convs (all but the stem and FC)' codes",
                       "tans_bits_per_weight_body": "tANS payload bits / weight (tables excluded)",
                       "file_bytes": "megabit.models.resnet.packed_size total (payloads, tables, steps, BN, bias; no headers)",
                       "mbit_bytes": "size of RUN/SCHEME/model.mbit, the real packed file (megabit.fmt.mbit_resnet; adds "
                                     "the config JSON and the container and section headers)"},
           "schemes": {s: {k: v for k, v in r.items() if k not in ("entropy_report", "history")} for s, r in results.items()},
           "details": {s: {"entropy_report": r["entropy_report"], "history": r["history"]} for s, r in results.items()}}
    atomic_write_text(a.results, json.dumps(out, indent=2))
    print(f"wrote {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
