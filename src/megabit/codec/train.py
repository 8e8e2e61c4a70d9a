"""Three-stage CPU training of the patch codec (time-budgeted, resumable).

Stages (each has a budget in *minutes of wall clock*, so "PSNR vs training minutes" is the x axis):

1. ``float``   float encoder (ReLU, float weights, BN) + per-patch decoder g_s on random 32x32
               patches in large batches, MSE, a random rate (128/256/512 bits) per patch.
2. ``qat_bn``  the quantized NQE encoder (HEQ low-bit weights, HWMSB, BN) initialised from the
               float one and trained with g_s on MSE plus a code-distillation hinge that pushes its
               pre-sign values to the float encoder's code signs.
   ``qat_bsn`` BN -> layer-shared Bit-Shift Normalization, then fine-tuning (NQE phase 2).
3. ``refine``  encoder frozen; refinement module (and g_s, at a lower LR) trained on 128x128 crops
               so that it learns to remove the seams between patches.

Only ``photos/`` (or another folder given by the caller) is used; a few images are held out for
the validation PSNR logged in ``metrics.jsonl``. bf16 autocast + channels_last for the float
decoder parts; the quantized encoder runs in float32 so that its integer accumulators stay exact.
Run directory: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (atomic, resume from it),
``model.pt`` (final: ``{"config", "state_dict", "bit_probs", "train"}``).
"""

from __future__ import annotations

import json
import math
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.images import load_folder, random_crops
from ..models.patch_codec import PatchCodec, PatchCodecConfig
from ..utils import atomic_save, atomic_write_text, resolve_device, use_bf16
from .metrics import ms_ssim_torch

__all__ = ["TrainCodecConfig", "train_codec", "STAGES", "validate", "save_codec", "split_train_val",
           "convert_encoder_to_bsn", "load_qat_bn_end", "write_bsn_start"]

STAGES = ("float", "qat_bn", "qat_bsn", "refine")


@dataclass(frozen=True)
class TrainCodecConfig:
    minutes: tuple[float, float, float, float] = (7.0, 5.0, 2.0, 8.0)  # per stage, in STAGES order
    batch_patches: int = 64  # many small steps beat few large ones on a CPU budget of minutes
    batch_crops: int = 8
    crop: int = 128
    lr: float = 2e-3
    lr_refine: float = 1e-3
    distill: float = 0.05
    n_val: int = 16
    val_every_s: float = 60.0
    threads: int = 1
    bf16: bool | None = None  # None: auto (native bf16 only; emulated bf16 is ~10x slower)
    seed: int = 0
    # "mse" or "ms-ssim": [I] the MS-SSIM variant uses 1 - MS-SSIM in the refine stage (frames),
    # MSE on the 32x32 patch stages (MS-SSIM is not defined on 32-pixel patches with 11-tap windows)
    loss: str = "mse"
    # Decoder-only continuation ([I], not in the paper): start from a finished model (bundled name
    # or model.pt), keep its encoder frozen and its bit table, and train only the refine stage
    # (refinement + g_s). The codes do not change, so files written with the init model keep
    # decoding (same encoder hash) — with the better decoder. Stages before "refine" are skipped.
    init: str | None = None
    lr_refine_dec: float = 0.2  # g_s learning rate in the refine stage, as a fraction of lr_refine
    device: str = "auto"  # auto: GPU when CUDA is available, else CPU (batches are cut on the CPU)
    # code binarization in the patch stages: "ste" = sign with a straight-through gradient (the shipped
    # model's); "stochastic" [I] = +-1 drawn with mean tanh(z) in the float stage (Toderici et al. 2016),
    # sign STE in the QAT stages (the integer encoder's code is sign(z) either way)
    binarize: str = "ste"
    # [I] not in the paper: warm-start the refinement module of a *fresh* run from a finished model
    # (bundled name or model.pt; only its ``refine.*`` weights). The refinement sees aggregated
    # per-patch decodes whatever the code is, so the deblocking it learned carries over to a new encoder.
    init_refine: str | None = None
    # [I] where a run with ``init`` starts: "refine" (decoder-only, above) or "qat_bsn" (a full
    # continuation: the quantized BSN encoder and g_s on patches, then the refine stage; the codes,
    # the bit table and the encoder hash change, so it is a new model). No float teacher (the
    # shipped files hold none): the qat_bsn stage trains on MSE alone.
    init_stage: str = "refine"
    lr_qat: float = 0.5  # encoder learning rate in the QAT stages, as a fraction of lr (g_s: 0.3 of that)
    # [I] beyond the paper: a decoder-only run (init, init_stage "refine") may add a cross-patch code
    # context module of this width (PatchCodecConfig.code_context) to the init model; it starts at
    # zero (the init model's decode) and trains with the refinement. 0: keep the init's decoder as is.
    code_context: int = 0
    # BN -> BSN conversion of the encoder before the qat_bsn stage: "quantile" (the paper's reading)
    # or "fit" ([I] ours, as train-classifier --bsn-init fit): shifts and offsets fitted layer by layer
    # to the BN encoder's activation codes and bits on bsn_calib_patches random training patches.
    # Default "fit" since session 31: same-start A/B after 6 min of qat_bsn, +0.08 dB (one run;
    # results/codec_bsn_ab.json). The bundled codecs were trained with "quantile".
    bsn_init: str = "fit"
    bsn_calib_patches: int = 4096

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainCodecConfig":
        d = dict(d)
        d["minutes"] = tuple(d["minutes"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown codec training config fields: {sorted(unknown)}")
        return cls(**d)


def _lr_at(base: float, frac: float) -> float:
    """Short linear warm-up (3 %) then cosine decay to 5 % of base over the stage."""
    if frac < 0.03:
        return base * (0.1 + 0.9 * frac / 0.03)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _psnr(mse: float) -> float:
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


@torch.no_grad()
def validate(model: PatchCodec, val: torch.Tensor, refine: bool = True) -> dict:
    """PSNR (dB, 0..255, rounded output) per rate on held-out 256x256 training-set photos."""
    model.eval()
    dev = next(model.parameters()).device
    out = {}
    for r in model.cfg.rates:
        se, n = 0.0, 0
        for i in range(val.shape[0]):
            x = val[i : i + 1].float().to(dev)
            y = model(x, r, refine=refine)["x_hat"].round().clamp(0, 255)
            se += float(((y - x) ** 2).sum())
            n += x.numel()
        out[str(r)] = round(_psnr(se / n), 3)
    return out


def split_train_val(images: torch.Tensor, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split of a photo folder: ``n_val`` held-out images (fixed permutation, seed 1234)
    cut to centre crops of up to 128x128 (cheap validation), the rest for training."""
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(1234))
    val, train = images[perm[:n_val]], images[perm[n_val:]]
    c = min(128, val.shape[2], val.shape[3]) // 32 * 32
    y0, x0 = (val.shape[2] - c) // 2, (val.shape[3] - c) // 2
    return train, val[:, :, y0 : y0 + c, x0 : x0 + c].contiguous()


def _float_to_quant(fm: PatchCodec) -> PatchCodec:
    """Quantized model initialised from the float one (same tensors; BN affine rescaled for HWMSB)."""
    qcfg = fm.cfg.with_(quantize=True, norm="bn")
    qm = PatchCodec(qcfg).to(next(fm.parameters()).device)
    sd = fm.state_dict()
    missing = qm.load_state_dict(sd, strict=False)
    with torch.no_grad():
        for blk in qm.g_a.blocks:
            # float blocks feed ReLU (values ~N(0,1)+); HWMSB clips at 1, so shrink BN's output
            # range to make ~3 sigma land inside [0, 1] ([I] a heuristic init, QAT adapts it).
            blk.norm.weight.mul_(0.3)
            blk.norm.bias.mul_(0.3).add_(0.15)
    del missing
    return qm


def _init_path(init: str) -> Path:
    """The file of an init model: a model.pt path, else a bundled name's asset."""
    from .registry import asset_path

    p = Path(init)
    return p if (p.suffix == ".pt" or p.is_file()) else asset_path(init)


def load_init(init: str) -> tuple[PatchCodec, dict]:
    """The model a decoder-only run starts from: a bundled name or a model.pt (quantized, BSN)."""
    path = _init_path(init)
    if not path.is_file():
        raise ValueError(f"init model not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated / not a torch file
        raise ValueError(f"not a patch codec model file: {path} ({type(e).__name__})") from None
    if not isinstance(obj, dict) or "config" not in obj or "state_dict" not in obj:
        raise ValueError(f"not a patch codec model file: {path}")
    cfg = PatchCodecConfig.from_dict(obj["config"])
    if not (cfg.quantize and cfg.norm == "bsn"):
        raise ValueError(f"init model {path} is not a finished codec (quantized encoder with BSN)")
    model = PatchCodec(cfg)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match its config ({str(e).splitlines()[0]})") from None
    return model, obj


def _context_models_of(init: str) -> dict:
    """The init model's second-stage context models (embedded or sidecars) as model-file entries."""
    from .api import load_codec

    c = load_codec(str(_init_path(init).resolve()))
    out = {}
    if c.ctx is not None:
        out["ctx_model"] = c.ctx.to_bytes()
    if c.ctx_alt:
        out["ctx_alt"] = {k: m.to_bytes() for k, m in c.ctx_alt.items()}
    return out


def _with_code_context(model: PatchCodec, width: int) -> PatchCodec:
    """``model`` with a fresh (zero-output) code context module of ``width``; all else copied."""
    if model.ctx is not None:
        raise ValueError(f"the init model already has a code context module (width {model.cfg.code_context})")
    new = PatchCodec(model.cfg.with_(code_context=width))
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("ctx.") for k in missing), (missing, unexpected)
    return new


def _state(stage: int, elapsed: float, model: PatchCodec, opt, teacher, metrics, tcfg) -> dict:
    return {
        "stage": stage, "elapsed": elapsed, "config": model.cfg.to_dict(), "state_dict": model.state_dict(),
        "opt": opt.state_dict() if opt is not None else None,
        "teacher": teacher.state_dict() if teacher is not None else None,
        "teacher_config": teacher.cfg.to_dict() if teacher is not None else None,
        "metrics": metrics, "train_config": tcfg.to_dict(),
    }


def convert_encoder_to_bsn(model: PatchCodec, tcfg: TrainCodecConfig, train: torch.Tensor, log=print) -> PatchCodec:
    """The qat_bn -> qat_bsn transition: BN -> BSN conversion of ``model``'s encoder in place, by
    ``tcfg.bsn_init`` ("fit": calibrated on ``tcfg.bsn_calib_patches`` random 32x32 crops of ``train``)."""
    calib = None
    if tcfg.bsn_init == "fit":  # own generator: the training crops stay those of a quantile run
        cgen = torch.Generator().manual_seed(tcfg.seed + 1)
        calib = random_crops(train, tcfg.bsn_calib_patches, 32, cgen).to(next(model.parameters()).device)
    model.convert_to_bsn(calib)
    if calib is not None:
        log(json.dumps({"bsn_fit": model.g_a.bsn_fit}))
    return model


def load_qat_bn_end(path: str | Path) -> tuple[PatchCodec, dict]:
    """A run's ``qat_bn_end.pt``: the quantized BN-mode codec and the file's entries (teacher and
    training config in files from session 31 on). ValueError, one line, for anything else."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} is not a torch file") from None
    if not isinstance(obj, dict) or "model" not in obj or "state_dict" not in obj:
        raise ValueError(f"{path} is not a train-codec qat_bn_end.pt")
    model = PatchCodec(PatchCodecConfig.from_dict(obj["model"]))
    model.load_state_dict(obj["state_dict"])
    if model.cfg.norm != "bn" or not model.cfg.quantize:
        raise ValueError(f"{path} is not a quantized BatchNorm-mode codec")
    return model, obj


def write_bsn_start(out_dir: str | Path, bn_end: str | Path, tcfg: TrainCodecConfig, train: torch.Tensor,
                    teacher_from: str | Path | None = None, log=print) -> PatchCodec:
    """A resumable run folder at the start of the qat_bsn stage, made from a run's ``qat_bn_end.pt``
    (BN-mode model and its float teacher): the encoder converted by ``tcfg.bsn_init`` and a fresh
    optimizer, as train-codec does at that transition. ``train_codec(..., resume=True)`` continues
    it, so the conversions can be compared after the same fine-tuning from one start. ``teacher_from``:
    take the teacher from that run's ``checkpoint.pt`` instead (files written before qat_bn_end.pt
    kept it). Returns the converted model."""
    model, obj = load_qat_bn_end(bn_end)
    if teacher_from is not None:
        src = torch.load(teacher_from, map_location="cpu", weights_only=False)
        if not isinstance(src, dict):
            raise ValueError(f"{teacher_from} is not a train-codec checkpoint.pt")
        obj = {**obj, "teacher": src.get("teacher"), "teacher_config": src.get("teacher_config")}
    if obj.get("teacher") is None:
        raise ValueError(f"no teacher in {teacher_from or bn_end} (a qat_bn_end.pt from before the teacher was kept "
                         "needs teacher_from: a checkpoint.pt of that run taken in its qat_bn or qat_bsn stage)")
    teacher = PatchCodec(PatchCodecConfig.from_dict(obj["teacher_config"]))
    teacher.load_state_dict(obj["teacher"])
    convert_encoder_to_bsn(model, tcfg, train, log)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps({"train": tcfg.to_dict(), "model": model.cfg.to_dict()}, indent=2))
    atomic_save(_state(STAGES.index("qat_bsn"), 0.0, model, _make_opt(model, "qat_bsn", tcfg), teacher, [], tcfg),
                out / "checkpoint.pt")
    return model


def save_codec(model: PatchCodec, path: str | Path, extra: dict | None = None) -> None:
    """Small final file: config + state_dict (+ bit probabilities, training facts)."""
    obj = {"config": model.cfg.to_dict(), "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    obj.update(extra or {})
    atomic_save(obj, path)


def _make_opt(model: PatchCodec, stage: str, tcfg: TrainCodecConfig):
    if stage == "refine":
        ctx = list(model.ctx.parameters()) if model.ctx is not None else []
        groups = [{"params": list(model.refine.parameters()) + ctx, "lr": tcfg.lr_refine, "base": tcfg.lr_refine},
                  {"params": list(model.g_s.parameters()), "lr": tcfg.lr_refine * tcfg.lr_refine_dec,
                   "base": tcfg.lr_refine * tcfg.lr_refine_dec}]
    else:
        base = tcfg.lr if stage == "float" else tcfg.lr * tcfg.lr_qat
        dec_lr = base if stage == "float" else base * 0.3
        groups = [{"params": list(model.g_a.parameters()), "lr": base, "base": base},
                  {"params": list(model.g_s.parameters()), "lr": dec_lr, "base": dec_lr}]
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def train_codec(
    data_root: str | Path,
    out_dir: str | Path,
    tcfg: TrainCodecConfig = TrainCodecConfig(),
    mcfg: PatchCodecConfig = PatchCodecConfig(),
    resume: bool = False,
    stop_after_s: float | None = None,
    log=print,
) -> dict:
    """Run (or resume) the stages; returns the final metrics. ``stop_after_s`` ends this call early
    (checkpoint kept) so that a long schedule can be run as several short sessions."""
    torch.set_num_threads(tcfg.threads)
    if tcfg.loss not in ("mse", "ms-ssim"):
        raise ValueError(f"loss must be 'mse' or 'ms-ssim', got {tcfg.loss!r}")
    if not tcfg.lr_qat > 0:
        raise ValueError(f"lr_qat must be > 0, got {tcfg.lr_qat}")
    if tcfg.init_stage not in ("refine", "qat_bsn"):
        raise ValueError(f"init_stage must be 'refine' or 'qat_bsn', got {tcfg.init_stage!r}")
    if tcfg.binarize not in ("ste", "stochastic"):
        raise ValueError(f"binarize must be 'ste' or 'stochastic', got {tcfg.binarize!r}")
    if tcfg.bsn_init not in ("quantile", "fit") or tcfg.bsn_calib_patches < 1:
        raise ValueError(f"bsn_init must be 'quantile' or 'fit' and bsn_calib_patches >= 1 "
                         f"(got {tcfg.bsn_init!r}, {tcfg.bsn_calib_patches})")
    dev = resolve_device(tcfg.device)
    amp = use_bf16(tcfg.bf16, dev.type)
    # a bad --init fails before the run folder is created; init_obj's tensors stay the original ones
    init_model, init_obj = load_init(tcfg.init) if tcfg.init is not None else (None, None)
    if tcfg.init_refine is not None and tcfg.init is not None:
        raise ValueError("init_refine is for fresh runs; a decoder-only run (init) already starts from its refine module")
    refine_sd = None
    if tcfg.init_refine is not None:
        refine_sd = {k[len("refine."):]: v for k, v in load_init(tcfg.init_refine)[0].state_dict().items()
                     if k.startswith("refine.")}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = load_folder(data_root)
    gen = torch.Generator().manual_seed(tcfg.seed)
    train, val = split_train_val(images, tcfg.n_val)

    ckpt = out / "checkpoint.pt"
    teacher = None
    metrics: list[dict] = []
    if resume and ckpt.exists():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        stage, elapsed = st["stage"], st["elapsed"]
        model = PatchCodec(PatchCodecConfig.from_dict(st["config"]))
        model.load_state_dict(st["state_dict"])
        model.to(dev)
        if st["teacher"] is not None:
            teacher = PatchCodec(PatchCodecConfig.from_dict(st["teacher_config"]))
            teacher.load_state_dict(st["teacher"])
            teacher.to(dev)
        metrics = st["metrics"]
        opt = _make_opt(model, STAGES[stage], tcfg) if stage < len(STAGES) else None
        if opt is not None and st["opt"] is not None:
            opt.load_state_dict(st["opt"])
        gen.manual_seed(tcfg.seed + len(metrics) + 1)
        log(f"resumed at stage {STAGES[min(stage, len(STAGES) - 1)]} ({elapsed:.0f}s into it)")
    elif tcfg.init is not None:
        if tcfg.code_context and init_model.cfg.code_context != tcfg.code_context:
            init_model = _with_code_context(init_model, tcfg.code_context)
        model = init_model.to(dev)
        stage, elapsed = STAGES.index(tcfg.init_stage), 0.0
        opt = _make_opt(model, tcfg.init_stage, tcfg)
        atomic_write_text(out / "config.json", json.dumps({"train": tcfg.to_dict(), "model": model.cfg.to_dict()}, indent=2))
        log(f"init from {tcfg.init}: encoder frozen, training the decoder (refine stage) only" if tcfg.init_stage == "refine"
            else f"init from {tcfg.init}: continuing from stage {tcfg.init_stage} (encoder and decoder train)")
    else:
        stage, elapsed = 0, 0.0
        model = PatchCodec(mcfg.with_(quantize=False, norm="bn")).to(dev)
        if refine_sd is not None:
            try:
                model.refine.load_state_dict(refine_sd)
            except RuntimeError as e:
                raise ValueError(f"init_refine {tcfg.init_refine}: refinement module does not match this config "
                                 f"({str(e).splitlines()[0]})") from None
            log(f"refinement module warm-started from {tcfg.init_refine}")
        opt = _make_opt(model, "float", tcfg)
        atomic_write_text(out / "config.json", json.dumps({"train": tcfg.to_dict(), "model": mcfg.to_dict()}, indent=2))

    t_call = time.time()
    rates = torch.tensor(model.cfg.rates)
    first = STAGES.index(tcfg.init_stage) if tcfg.init is not None else 0  # stages an init run skips
    total_prev = sum(tcfg.minutes[first:stage]) * 60
    with open(out / "metrics.jsonl", "a") as mlog:
        while stage < len(STAGES):
            name = STAGES[stage]
            budget_s = tcfg.minutes[stage] * 60
            model.train()
            if name == "refine":
                model.g_a.eval()
                for p in model.g_a.parameters():
                    p.requires_grad_(False)
            if teacher is not None:
                teacher.eval()
            last_val = time.time()
            t0 = time.time() - elapsed
            step, loss_ema = 0, None
            while elapsed < budget_s:
                frac = elapsed / budget_s
                for g in opt.param_groups:
                    g["lr"] = _lr_at(g["base"], frac)
                if name == "refine":
                    x = random_crops(train, tcfg.batch_crops, tcfg.crop, gen).float().to(dev)
                    r = rates[torch.randint(0, len(rates), (x.shape[0],), generator=gen)].to(dev)
                    with torch.no_grad():
                        from ..models.patch_codec import patchify, unpatchify

                        codes = model.g_a(patchify(x))
                    gh = gw = tcfg.crop // 32
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        pr = r.repeat_interleave(gh * gw)
                        xp = unpatchify(model.decode_patches(codes, pr, (x.shape[0], gh, gw)), x.shape[0], gh, gw)
                        xh = model.refine(xp.contiguous(memory_format=torch.channels_last), r.float() / model.cfg.max_bits)
                    if tcfg.loss == "ms-ssim":
                        loss = 1.0 - ms_ssim_torch(xh.float() * 255.0, x).mean()
                    else:
                        loss = F.mse_loss(xh.float() * 255.0, x)
                else:
                    x = random_crops(train, tcfg.batch_patches, 32, gen).float().to(dev)
                    r = rates[torch.randint(0, len(rates), (x.shape[0],), generator=gen)].to(dev)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and name == "float"):
                        z = model.g_a.pre_sign(x)
                    from ..quant.ste import sign_ste, stochastic_sign_ste

                    if tcfg.binarize == "stochastic" and name == "float":
                        codes = stochastic_sign_ste(z.float(), gen)
                    else:
                        codes = sign_ste(z.float())
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        xh = model.decode_patches(codes, r)
                    loss = F.mse_loss(xh.float() * 255.0, x)
                    if teacher is not None and tcfg.distill > 0:
                        with torch.no_grad():
                            tz = teacher.g_a.pre_sign(x).sign()
                        loss = loss + tcfg.distill * 255.0 * F.relu(0.5 - z.float() * tz).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                lv = float(loss.detach())
                loss_ema = lv if loss_ema is None else 0.95 * loss_ema + 0.05 * lv
                elapsed = time.time() - t0
                done = elapsed >= budget_s
                if time.time() - last_val > tcfg.val_every_s or done:
                    v = validate(model, val[:4] if not done else val, refine=(name == "refine"))
                    rec = {"stage": name, "stage_s": round(elapsed, 1), "train_min": round((total_prev + elapsed) / 60, 2),
                           "step": step, "loss_ema": round(loss_ema, 3), "val_psnr": v, "n_val": 4 if not done else val.shape[0]}
                    metrics.append(rec)
                    mlog.write(json.dumps(rec) + "\n")
                    mlog.flush()
                    log(json.dumps(rec))
                    model.train()
                    if name == "refine":
                        model.g_a.eval()
                    atomic_save(_state(stage, elapsed, model, opt, teacher, metrics, tcfg), ckpt)
                    last_val = time.time()
                    if stop_after_s is not None and time.time() - t_call > stop_after_s and not done:
                        log("stopping early (stop_after_s); resume to continue")
                        return {"stopped": True, "metrics": metrics}
            # stage transition
            total_prev += budget_s
            stage += 1
            elapsed = 0.0
            if stage < len(STAGES):
                nxt = STAGES[stage]
                if nxt == "qat_bn":
                    teacher = model
                    model = _float_to_quant(teacher)
                elif nxt == "qat_bsn":
                    # the BN-mode encoder at the end of qat_bn (with its teacher): conversions can be compared on it
                    # (recipes/codec_bsn_conversion.py), or both fine-tuned from it (recipes/codec_bsn_ab.py)
                    atomic_save({"model": model.cfg.to_dict(), "state_dict": model.state_dict(),
                                 "teacher": teacher.state_dict(), "teacher_config": teacher.cfg.to_dict(),
                                 "train_config": tcfg.to_dict()}, out / "qat_bn_end.pt")
                    convert_encoder_to_bsn(model, tcfg, train, log)
                elif nxt == "refine":
                    teacher = None
                opt = _make_opt(model, nxt, tcfg)
            else:
                opt = None
            atomic_save(_state(stage, 0.0, model, opt, teacher, metrics, tcfg), ckpt)

    model = model.cpu().eval()
    from .entropy_model import fit_bit_probs

    minutes = sum(tcfg.minutes)
    if tcfg.init is not None:
        minutes = sum(tcfg.minutes[first:]) + float(init_obj.get("train", {}).get("train_minutes", 0.0))
    bit_probs = None
    if tcfg.init is not None and tcfg.init_stage == "refine":  # same encoder: keep its bit table (and hash)
        enc0 = {k: v for k, v in init_obj["state_dict"].items() if k.startswith("g_a.")}
        if any(not torch.equal(enc0[f"g_a.{k}"], v) for k, v in model.g_a.state_dict().items()):
            raise RuntimeError("the encoder changed during a decoder-only run")
        bit_probs = init_obj.get("bit_probs")
    if bit_probs is None:
        bit_probs = fit_bit_probs(model, train, gen)
    final = {"val_psnr": validate(model, val), "val_psnr_no_refine": validate(model, val, refine=False),
             "train_minutes": round(minutes, 2), "metrics": metrics}
    if tcfg.init is not None:
        final["init"] = str(tcfg.init)
        final["init_stage"] = tcfg.init_stage
    extra = {"bit_probs": bit_probs, "train": {k: v for k, v in final.items() if k != "metrics"}}
    if tcfg.init is not None and tcfg.init_stage == "refine":
        extra.update(_context_models_of(tcfg.init))  # same codes: the init's context models still fit them
    save_codec(model, out / "model.pt", extra)
    atomic_write_text(out / "result.json", json.dumps(final, indent=2))
    return final
