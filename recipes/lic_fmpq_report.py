"""Assemble the FMPQ BD-rate study (``recipes/lic_fmpq_bd.py``) into results/fmpq_<arch>.json and a plot.

For each architecture: the RD points (Kodak) of the float codec, uniform b-bit and FMPQ at the size of
uniform b-bit (both after the same QAT), BD-rate / BD-PSNR of every curve against uniform 8-bit and of
FMPQ against uniform at equal size (PSNR and MS-SSIM in dB, cubic and pchip), the plans per layer,
search iterations (adaptive vs grid) and the training budget.

    python recipes/lic_fmpq_report.py --work runs/fmpqbd
"""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

import torch

PUBLISHED = {"scale-hyperprior": "compressai-bmshj2018-hyperprior_mse_cpu",
             "mean-scale-hyperprior": "compressai-mbt2018-mean_mse_cpu",
             "cheng2020-anchor": "compressai-cheng2020-anchor_mse_cpu"}


def _msssim_db(v: float) -> float:
    return -10 * math.log10(max(1 - v, 1e-12))


def _bd(anchor: list[dict], test: list[dict]) -> dict:
    from megabit.metrics import bd_psnr, bd_rate

    out = {}
    for q, f in (("psnr", lambda r: r["psnr"]), ("ms_ssim_db", lambda r: _msssim_db(r["ms_ssim"]))):
        ra, qa = [r["bpp"] for r in anchor], [f(r) for r in anchor]
        rt, qt = [r["bpp"] for r in test], [f(r) for r in test]
        for m in ("cubic", "pchip"):
            try:
                out[f"bd_rate_{q}_{m}"] = round(bd_rate(ra, qa, rt, qt, method=m), 3)
            except ValueError as e:  # no overlap, non-monotone curve: say so instead of a number
                out[f"bd_rate_{q}_{m}"] = f"n/a ({e})"
        try:
            out[f"bd_{q}_cubic_db"] = round(bd_psnr(ra, qa, rt, qt), 4)
        except ValueError as e:
            out[f"bd_{q}_cubic_db"] = f"n/a ({e})"
    return out


def _bd_table(curves: dict, variants: list[str], unif: list[int], n_lambdas: int,
              kinds: tuple[str, ...] = ("fmpq",)) -> dict:
    """Every variant against uniform 8-bit, and FMPQ against uniform at equal size (complete curves only)."""
    if not curves.get("u8") or not all(len(c) == n_lambdas for c in curves.values()):
        return {}
    bd = {f"{v}_vs_u8": _bd(curves["u8"], curves[v]) for v in variants if v != "u8"}
    bd.update({f"{k}{b}_vs_u{b}": _bd(curves[f"u{b}"], curves[f"{k}{b}"]) for k in kinds for b in unif if b != 8})
    if len(kinds) > 1:  # the criteria against each other at equal size
        bd.update({f"{k}{b}_vs_{kinds[0]}{b}": _bd(curves[f"{kinds[0]}{b}"], curves[f"{k}{b}"])
                   for k in kinds[1:] for b in unif})
    return bd


def collect(a) -> None:
    from lic_fmpq_bd import extra_evals, fmpq_kinds

    from megabit.fmt.mbit_lic import encode_lic_mbit
    from megabit.search import QuantPlan, SensitivityTable, adaptive_search, coded_size, load_quantized
    from megabit.utils import atomic_write_text

    w = Path(a.work)
    lams = [float(x) for x in a.lambdas.split(",")]
    unif = [int(x) for x in a.uniform.split(",")]
    kinds = tuple(fmpq_kinds(a))
    variants = ["float"] + [f"{k}{b}" for b in unif for k in ("u", *kinds)] + [f"u8s{k}" for k in range(1, a.noise_seeds + 1)]
    tag = f"_{a.tag}" if a.tag else ""
    summary = {}
    curves_all = {}
    for arch in a.archs.split(","):
        d = w / arch
        if not (d / "base.pt").exists():
            continue
        base = torch.load(d / "base.pt", map_location="cpu", weights_only=False)
        per_lambda, curves = {}, {v: [] for v in variants}
        curves8 = {v: [] for v in variants}
        curves_x = {name: {v: [] for v in variants} for name, _ in extra_evals(a)}
        for lm in lams:
            ld = d / f"l{lm}"
            row = {}
            if (ld / "float.pt").exists():
                ck = torch.load(ld / "float.pt", map_location="cpu", weights_only=False)
                row["train"] = {"base_steps": base["step"], "base_minutes": round(base["elapsed_s"] / 60, 2),
                                "finetune_steps": ck["step"], "finetune_minutes": round(ck["elapsed_s"] / 60, 2),
                                "last_log": ck["log"][-1] if ck.get("log") else None}
            if (ld / "sens.json").exists():
                s = SensitivityTable.load(ld / "sens.json")
                row["sensitivity"] = {"rd_float": s.rd_float, "seconds": s.meta.get("seconds"),
                                      "forward_passes": s.meta.get("forward_passes"), "bits": s.bits,
                                      "zeta": {li.name: [round(float(z), 5) for z in zr]
                                               for li, zr in zip(s.layers, s.zeta)}}
            plans = {}
            for b in unif:
                for k in ("u", *kinds):
                    p = ld / f"plan_{k}{b}.json"
                    if p.exists():
                        pl = QuantPlan.load(p)
                        plans[f"{k}{b}"] = {"size_bits": pl.size_bits, "mean_weight_bits": round(pl.mean_bits, 4),
                                            **({"bits": pl.bits, "search": pl.meta} if k != "u" else {})}
            row["plans"] = plans
            if (ld / "sens.json").exists() and plans:  # both bracketings, recomputed from the cached table
                rec = {}
                for b in unif:
                    if f"u{b}" not in plans:
                        continue
                    T = plans[f"u{b}"]["size_bits"] * 0.995
                    ra = adaptive_search(s, T, tol=0.005)
                    rl = adaptive_search(s, T, tol=0.005, bracket="log")
                    rec[f"fmpq{b}"] = {"breakpoints": {"iterations": ra.iterations, "converged": ra.converged,
                                                       "size_bits": ra.size_bits},
                                       "log": {"iterations": rl.iterations, "converged": rl.converged,
                                               "size_bits": rl.size_bits}}
                row["search_recomputed"] = rec
            ev = {}
            for v in variants:
                f = ld / f"kodak_{v}.json"
                if not f.exists():
                    continue
                r = json.loads(f.read_text())
                ev[v] = {"bpp": r["mean_bpp"], "psnr": r["mean_psnr"], "ms_ssim": r.get("mean_ms_ssim"),
                         "rate": r.get("rate", "bitstream"), "n_images": r["n_images"],
                         **({"size_bits": r["size_bits"], "mean_weight_bits": r.get("mean_weight_bits")}
                            if "size_bits" in r else {})}
                q = ld / f"q_{v}.pt"
                if q.exists():  # entropy-coded size of the QAT'd weights (rANS, verified by decoding)
                    qm, qplan, qobj = load_quantized(q)
                    cs = coded_size(qm)
                    ev[v]["ans_bytes"] = cs["total_bytes"]
                    ev[v]["ans_bits_per_weight"] = cs["bits_per_weight"]
                    # the whole `megabit fmpq pack` file (weights + float32 biases/GDN/bottleneck + plan)
                    ev[v]["mbit_file_bytes"] = len(encode_lic_mbit(qm, qplan, qobj["config"]))
                curves[v].append({"lmbda": lm, **ev[v]})
            row["kodak"] = ev
            ev8 = {}
            for v in variants:
                f = ld / f"kodak8bs_{v}.json"
                if f.exists():
                    r8 = json.loads(f.read_text())
                    ev8[v] = {"bpp": r8["mean_bpp"], "psnr": r8["mean_psnr"], "ms_ssim": r8.get("mean_ms_ssim")}
                    curves8[v].append({"lmbda": lm, **ev8[v]})
            if ev8:
                row["kodak8_bitstream"] = ev8
            for name, _ in extra_evals(a):  # the same variants on another evaluation set (--extra-eval)
                evx = {}
                for v in variants:
                    f = ld / f"{name}_{v}.json"
                    if f.exists():
                        rx = json.loads(f.read_text())
                        evx[v] = {"bpp": rx["mean_bpp"], "psnr": rx["mean_psnr"], "ms_ssim": rx.get("mean_ms_ssim"),
                                  "n_images": rx["n_images"]}
                        curves_x[name][v].append({"lmbda": lm, **evx[v]})
                if evx:
                    row[name] = evx
            per_lambda[str(lm)] = row
        # a variant with no result at any lambda was not part of this architecture's run (e.g. no noise
        # seed there): it is left out instead of making the whole architecture incomplete
        run = [v for v in variants if curves[v] or v in ("u8", "float")]
        complete = all(len(curves[v]) == len(lams) for v in run)
        curves = {v: c for v, c in curves.items() if v in run}
        curves8 = {v: c for v, c in curves8.items() if c}
        curves_x = {name: {v: c for v, c in cx.items() if v in run} for name, cx in curves_x.items()}
        bd, bd8 = (_bd_table(curves, run, unif, len(lams), kinds),
                   _bd_table(curves8, [v for v in run if v in curves8], unif, len(lams), kinds))
        iters = [v["breakpoints"]["iterations"] for row in per_lambda.values()
                 for v in row.get("search_recomputed", {}).values()]
        liters = [v["log"]["iterations"] for row in per_lambda.values() for v in row.get("search_recomputed", {}).values()]
        giters = [pl["search"]["grid"]["iterations"] for row in per_lambda.values() for k, pl in row["plans"].items()
                  if k.startswith("fmpq")]
        cfg = base["config"]
        res = {
            "what": f"FMPQ (arXiv 2506.01221) vs uniform quantization on a small {arch} "
                    f"(N={cfg['N']}, M={cfg['M']}), {len(lams)} lambdas, Kodak (24 images, evaluation only). "
                    f"Weights with one scale per {getattr(a, 'granularity', 'channel')}"
                    + (f", every quantized layer's input at {a.act_bits} bits" if getattr(a, "act_bits", None) else
                       ", activations float") + ". "
                    "Every quantized variant gets the same QAT steps. CPU-budget models, far from CompressAI's "
                    "converged ones: compare the curves with each other, not with the published points.",
            "complete": complete and bool(bd),
            "hardware": "2-core x86_64 CPU (AVX2, no native bf16), fp32, 1 torch thread per worker, 2 workers",
            "platform": platform.platform(), "torch": torch.__version__,
            "config": cfg, "lambdas": lams, "base_lmbda": base["lmbda"],
            "quantizer": {"granularity": getattr(a, "granularity", "channel"), "act_bits": getattr(a, "act_bits", None)},
            "train_data": "/work/shared/data/photos (480 crops), random 128x128 crops + flips, batch 8",
            "eval_rate": next((r["kodak"][v]["rate"] for r in per_lambda.values() for v in r["kodak"]), None),
            "bd_vs": bd,
            **({"bd_vs_real_bitstream_first8": bd8,
                "bd_vs_real_bitstream_first8_note": "real rANS bitstreams on kodim01-08 (recipes/lic_fmpq_bitstream8.sh); "
                "the 24-image numbers above use the forward-pass likelihood estimate, whose x_hat rounds y "
                "without the predicted means (CompressAI's forward semantics) and so differs from the decoder's"}
               if bd8 else {}),
            **{f"bd_vs_{name}": _bd_table(cx, run, unif, len(lams), kinds) for name, cx in curves_x.items()
               if any(cx.values())},
            **({"extra_eval_sets": {n: f for n, f in extra_evals(a) if any(curves_x[n].values())}}
               if any(any(cx.values()) for cx in curves_x.values()) else {}),
            "search_iterations": {"adaptive": iters, "adaptive_log": liters, "grid": giters,
                                  "adaptive_mean": round(sum(iters) / len(iters), 2) if iters else None,
                                  "adaptive_log_mean": round(sum(liters) / len(liters), 2) if liters else None,
                                  "note": "adaptive = bisection over zeta breakpoints once bracketed (megabit); "
                                          "adaptive_log = bisection in log beta (our reading of the paper); both "
                                          "recomputed from the cached sensitivity tables"},
            "per_lambda": per_lambda,
            "criteria": {k: c for c, k in __import__("lic_fmpq_bd").KINDS.items() if k in kinds},
            "reproduce": " ".join(sys.argv) if a.tag else
                         "python recipes/lic_fmpq_bd.py --work runs/fmpqbd (x2 workers); "
                         "python recipes/lic_fmpq_bd.py --work runs/fmpqbd --collect",
        }
        atomic_write_text(Path(a.results) / f"fmpq_{arch}{tag}.json", json.dumps(res, indent=1))
        summary[arch] = {"complete": res["complete"], **{k: {kk: vv for kk, vv in v.items() if "pchip" not in kk}
                                                          for k, v in bd.items()}}
        curves_all[arch] = curves
        print(f"{arch}: " + json.dumps(summary[arch]))
    if curves_all:
        plot(curves_all, Path(a.results) / f"fmpq_rd_kodak{tag}.png")
    atomic_write_text(Path(a.results) / f"fmpq_bd_summary{tag}.json", json.dumps(summary, indent=1))


def plot(curves_all: dict, path: Path, published_root: str = "/work/shared/compressai_kodak_results") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves_all), figsize=(5.2 * len(curves_all), 4.6), squeeze=False)
    style = {"float": ("k", "-", "o"), "u8": ("tab:blue", "-", "s"), "fmpq8": ("tab:blue", "--", "^"),
             "u6": ("tab:green", "-", "s"), "fmpq6": ("tab:green", "--", "^"),
             "u4": ("tab:red", "-", "s"), "fmpq4": ("tab:red", "--", "^"),
             "fmpqbdp8": ("tab:blue", ":", "v"), "fmpqbdp6": ("tab:green", ":", "v"), "fmpqbdp4": ("tab:red", ":", "v")}
    for ax, (arch, curves) in zip(axes[0], curves_all.items()):
        pub = Path(published_root) / f"{PUBLISHED[arch]}.json"
        if pub.is_file():
            r = json.loads(pub.read_text())["results"]
            pts = [(b, p) for b, p in zip(r["bpp"], r["psnr-rgb"]) if b < 0.8]
            ax.plot(*zip(*pts), ":", c="gray", label=f"CompressAI {PUBLISHED[arch].split('-', 1)[1][:-8]} (published)")
        for v, c in curves.items():
            if not c:
                continue
            col, ls, mk = style.get(v, ("gray", "-", "."))
            c = sorted(c, key=lambda r: r["bpp"])
            ax.plot([r["bpp"] for r in c], [r["psnr"] for r in c], ls, c=col, marker=mk, ms=4, label=v)
        ax.set_title(arch, fontsize=10)
        ax.set_xlabel("bpp")
        ax.set_ylabel("PSNR RGB (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Kodak (24 images): float, uniform b-bit and FMPQ at the size of uniform b-bit", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lic_fmpq_bd import build_parser

    collect(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def markdown(results_dir: str | Path, archs: list[str], tag: str = "") -> str:
    """Tables for docs/fmpq.md from results/fmpq_<arch>[_<tag>].json."""
    lines = []
    for arch in archs:
        f = Path(results_dir) / f"fmpq_{arch}{'_' + tag if tag else ''}.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        cfg = r["config"]
        lam0 = next(iter(r["per_lambda"].values()))
        tr = lam0.get("train", {})
        lines += [f"### {arch} (N={cfg['N']}, M={cfg['M']}; rate: {r['eval_rate']})", "",
                  f"Training: {tr.get('base_steps')} steps ({tr.get('base_minutes')} min) at lambda "
                  f"{r['base_lmbda']}, then {tr.get('finetune_steps')} steps ({tr.get('finetune_minutes')} min) per "
                  "lambda; every quantized variant: the same QAT.", "",
                  "| vs | BD-rate PSNR (cubic) | (pchip) | BD-PSNR (dB) | BD-rate MS-SSIM dB (cubic) |",
                  "|---|---|---|---|---|"]
        for k, v in r["bd_vs"].items():
            def fmt(x):
                return f"{x:+.2f} %" if isinstance(x, (int, float)) else "n/a"
            bdp = v.get("bd_psnr_cubic_db")
            lines.append(f"| {k.replace('_vs_', ' vs ')} | {fmt(v.get('bd_rate_psnr_cubic'))} | "
                         f"{fmt(v.get('bd_rate_psnr_pchip'))} | "
                         f"{bdp:+.3f} |" if isinstance(bdp, (int, float)) else f"| {k} | n/a | n/a | n/a |")
            if isinstance(bdp, (int, float)):
                lines[-1] += f" {fmt(v.get('bd_rate_ms_ssim_db_cubic'))} |"
        if r.get("bd_vs_real_bitstream_first8"):
            lines += ["", "Real rANS bitstreams, kodim01-08 only:", "",
                      "| vs | BD-rate PSNR (cubic) | (pchip) | BD-rate MS-SSIM dB (cubic) |", "|---|---|---|---|"]
            for k, v in r["bd_vs_real_bitstream_first8"].items():
                f_ = [v.get("bd_rate_psnr_cubic"), v.get("bd_rate_psnr_pchip"), v.get("bd_rate_ms_ssim_db_cubic")]
                lines.append(f"| {k.replace('_vs_', ' vs ')} | " + " | ".join(
                    f"{x:+.2f} %" if isinstance(x, (int, float)) else "n/a" for x in f_) + " |")
        lines += ["", "| lambda | " + " | ".join(lam0["kodak"]) + " |", "|---|" + "---|" * len(lam0["kodak"])]
        for lm, row in r["per_lambda"].items():
            lines.append(f"| {lm} | " + " | ".join(f"{v['bpp']:.3f} / {v['psnr']:.2f}" for v in row["kodak"].values())
                         + " |")
        lines += ["", "Sizes at lambda " + list(r["per_lambda"])[-1] + " (plan bits -> rANS bytes; mean weight bits):", ""]
        last = list(r["per_lambda"].values())[-1]
        for v, e in last["kodak"].items():
            if "size_bits" in e:
                lines.append(f"- {v}: {e['size_bits']:,} bits ({e['mean_weight_bits']:.2f} b/w) -> "
                             f"{e.get('ans_bytes', 0):,} B coded ({e.get('ans_bits_per_weight', 0):.2f} b/w)")
        it = r["search_iterations"]
        lines += ["", f"Search iterations per target: adaptive (breakpoints) {it['adaptive']} (mean "
                      f"{it['adaptive_mean']}); adaptive-log {it['adaptive_log']} (mean {it['adaptive_log_mean']}); "
                      f"grid: {sorted(set(it['grid']))}", ""]
    return "\n".join(lines)
