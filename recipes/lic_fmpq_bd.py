"""FMPQ BD-rate study: 3 LIC architectures x 4 lambdas, uniform vs mixed precision, Kodak.

For every architecture (scale hyperprior, mean-scale hyperprior, Cheng 2020 anchor) and every lambda:

1. train the float codec (``recipes/lic_train.py``): one base run at ``--base-lmbda``, then a
   fine-tune per lambda started from it (equal steps for every lambda);
2. ``megabit fmpq sensitivity`` with candidates ``--bits`` (default 2-12: above 8 so that a plan *of
   the same size as uniform 8-bit* can move bits from insensitive to sensitive layers [I]);
3. adaptive search (and the grid baseline, for its iteration count) for targets equal to the exact
   sizes of uniform ``--uniform`` bits (default 8, 6, 4);
4. QAT with the same number of steps for every variant: uniform b bits and FMPQ at the size of
   uniform b bits;
5. Kodak evaluation of the float codec and every variant (real rANS bitstreams, or the likelihood
   estimate for context-model codecs whose Python decoder is slow: ``--rate``).

Stages are files under ``--work``; any number of workers can run the same command at once (each takes
the next stage whose inputs exist, via an O_EXCL lock file that names its pid; a dead worker's lock is
taken over), and a restarted worker resumes (training resumes from its checkpoint). ``--collect``
assembles ``results/fmpq_<arch>.json`` (BD-rates, plans, iterations) and an RD plot.

    OMP_NUM_THREADS=1 python recipes/lic_fmpq_bd.py --work runs/fmpqbd &   # two workers on 2 cores
    OMP_NUM_THREADS=1 python recipes/lic_fmpq_bd.py --work runs/fmpqbd &
    wait; python recipes/lic_fmpq_bd.py --work runs/fmpqbd --collect
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARCHS = {  # name: (N, M, base minutes, fine-tune minutes, eval rate)
    "scale-hyperprior": (64, 96, 10.0, 3.5, "bitstream"),
    "mean-scale-hyperprior": (64, 96, 10.0, 3.5, "bitstream"),
    "cheng2020-anchor": (48, 48, 14.0, 5.0, "likelihood"),
}
LAMBDAS = [0.0018, 0.0035, 0.0067, 0.0130]  # CompressAI quality 1-4
KINDS = {"rd": "fmpq", "bd-proxy": "fmpqbdp"}  # sensitivity criterion -> variant prefix (files, reports)


def extra_evals(a) -> list[tuple[str, str]]:
    """(name, folder) of every ``--extra-eval`` set."""
    out = []
    for item in filter(None, (x.strip() for x in getattr(a, "extra_eval", "").split(","))):
        name, sep, folder = item.partition("=")
        if not sep or not name.isidentifier() or name == "kodak" or not folder:
            raise SystemExit(f"lic_fmpq_bd: error: --extra-eval takes NAME=DIR items (NAME not 'kodak'), got {item!r}")
        out.append((name, folder))
    return out


def fmpq_kinds(a) -> list[str]:
    """Variant prefixes of the FMPQ plans the study makes (``--criteria``)."""
    crit = [c.strip() for c in a.criteria.split(",") if c.strip()]
    bad = [c for c in crit if c not in KINDS]
    if bad or not crit:
        raise SystemExit(f"lic_fmpq_bd: error: --criteria takes a comma list of {', '.join(KINDS)}, got {a.criteria!r}")
    return [KINDS[c] for c in crit]


@dataclass
class Stage:
    name: str
    deps: list[str]
    run: Callable[[], None]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/fmpqbd")
    p.add_argument("--train-data", default="/work/shared/data/photos")
    p.add_argument("--eval-data", default="/work/shared/data/kodak")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--lambdas", default=",".join(map(str, LAMBDAS)))
    p.add_argument("--base-lmbda", type=float, default=0.0067)
    p.add_argument("--minutes-scale", type=float, default=1.0, help="multiply every training budget")
    p.add_argument("--bits", default="2-12")
    p.add_argument("--uniform", default="8,6,4")
    p.add_argument("--criteria", default="rd",
                   help="sensitivity criteria of the FMPQ plans: rd (the paper's, variants fmpqB) and/or bd-proxy "
                        "([I] relative rate + relative MSE change, variants fmpqbdpB)")
    p.add_argument("--noise-seeds", type=int, default=0,
                   help="also QAT uniform 8-bit with seeds 1..N (variants u8s1..): BD-rate u8sK vs u8 is the "
                        "run-to-run noise floor of the equal-QAT comparisons")
    p.add_argument("--tag", default="", help="suffix of the result files: results/fmpq_<arch>[_<tag>].json")
    p.add_argument("--granularity", choices=["channel", "tensor"], default="channel",
                   help="weight scales of every quantized variant: per output channel (default) or one per layer")
    p.add_argument("--act-bits", type=int, default=None,
                   help="QAT every quantized variant with its layers' inputs at this many bits too (W?A8 with 8)")
    p.add_argument("--n-calib", type=int, default=8)
    p.add_argument("--calib-crop", type=int, default=128)
    p.add_argument("--qat-steps", type=int, default=80)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--extra-eval", default="",
                   help="more evaluation sets, NAME=DIR[,NAME=DIR]: every variant is also evaluated there "
                        "(files NAME_<variant>.json; the report adds bd_vs_NAME), e.g. "
                        "clic=/work/shared/data/clic2025-val-half")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--collect", action="store_true", help="only assemble results/ from --work")
    p.add_argument("--results", default="results")
    return p


def stages_for(a) -> list[Stage]:
    from megabit.cli import fmpq

    w = Path(a.work)
    lams = [float(x) for x in a.lambdas.split(",")]
    unif = [int(x) for x in a.uniform.split(",")]
    kinds = fmpq_kinds(a)
    out: list[Stage] = []
    later: list[Stage] = []
    for arch in a.archs.split(","):
        N, M, base_min, ft_min, rate = ARCHS[arch]
        d = w / arch
        base = d / "base.pt"
        out.append(Stage(f"{arch}/base", [], lambda arch=arch, N=N, M=M, m=base_min, base=base: _train(
            ["--data", a.train_data, "--arch", arch, "--N", str(N), "--M", str(M), "--lmbda", str(a.base_lmbda),
             "--minutes", str(m * a.minutes_scale), "--threads", str(a.threads), "--out", str(base)])))
        for lm in lams:
            ld = d / f"l{lm}"
            ck = ld / "float.pt"
            tr = f"{arch}/l{lm}/train"
            later.append(Stage(tr, [f"{arch}/base"], lambda arch=arch, N=N, M=M, m=ft_min, ck=ck, lm=lm, base=base:
                               _train(["--data", a.train_data, "--arch", arch, "--N", str(N), "--M", str(M),
                                               "--lmbda", str(lm), "--minutes", str(m * a.minutes_scale),
                                               "--threads", str(a.threads), "--init", str(base), "--out", str(ck)])))
            sens = ld / "sens.json"
            later.append(Stage(f"{arch}/l{lm}/sens", [tr], lambda ck=ck, sens=sens: fmpq.main(
                ["sensitivity", "--checkpoint", str(ck), "--data", a.train_data, "--n-images", str(a.n_calib),
                 "--crop", str(a.calib_crop), "--bits", a.bits, "--granularity", a.granularity, "--out", str(sens)])))
            later.append(Stage(f"{arch}/l{lm}/plans", [f"{arch}/l{lm}/sens"],
                               lambda ld=ld, sens=sens: make_plans(sens, ld, unif, kinds)))
            ev = ["--data", a.eval_data, "--rate", rate] + (["--limit", str(a.eval_limit)] if a.eval_limit else [])
            later.append(Stage(f"{arch}/l{lm}/eval_float", [tr], lambda ck=ck, ld=ld, ev=ev: fmpq.main(
                ["eval", "--checkpoint", str(ck), *ev, "--out", str(ld / "kodak_float.json")])))
            for name, folder in extra_evals(a):
                later.append(Stage(f"{arch}/l{lm}/{name}_float", [tr], lambda ck=ck, ld=ld, name=name, folder=folder:
                                   fmpq.main(["eval", "--checkpoint", str(ck), "--data", folder, "--rate", rate,
                                              "--out", str(ld / f"{name}_float.json")])))

            def qat_eval(v: str, plan: Path, seed: int = 0, ck=ck, ld=ld, ev=ev, arch=arch, lm=lm) -> None:
                """QAT of one plan, then its Kodak evaluation (two stages)."""
                q = ld / f"q_{v}.pt"
                later.append(Stage(f"{arch}/l{lm}/qat_{v}", [f"{arch}/l{lm}/plans"], lambda: fmpq.main(
                    ["qat", "--checkpoint", str(ck), "--plan", str(plan), "--data", a.train_data,
                     "--steps", str(a.qat_steps), "--batch", "8", "--crop", "128", "--threads", str(a.threads),
                     "--seed", str(seed), *(["--act-bits", str(a.act_bits)] if a.act_bits else []),
                     "--out", str(q)])))
                later.append(Stage(f"{arch}/l{lm}/eval_{v}", [f"{arch}/l{lm}/qat_{v}"], lambda: fmpq.main(
                    ["eval", "--quantized", str(q), *ev, "--out", str(ld / f"kodak_{v}.json")])))
                for name, folder in extra_evals(a):
                    later.append(Stage(f"{arch}/l{lm}/{name}_{v}", [f"{arch}/l{lm}/qat_{v}"],
                                       lambda name=name, folder=folder: fmpq.main(
                                           ["eval", "--quantized", str(q), "--data", folder, "--rate", rate,
                                            "--out", str(ld / f"{name}_{v}.json")])))

            for b in unif:
                for kind in ("u", *kinds):
                    qat_eval(f"{kind}{b}", ld / f"plan_{kind}{b}.json")
            for k in range(1, a.noise_seeds + 1):  # the same uniform 8-bit plan, another QAT seed
                qat_eval(f"u8s{k}", ld / "plan_u8.json", seed=k)
    return out + later


def _train(argv: list[str]) -> None:
    """Run lic_train; a run stopped early (SIGTERM/SIGINT) ends this worker without marking the stage done."""
    import lic_train

    lic_train.main(argv)
    out, minutes = argv[argv.index("--out") + 1], float(argv[argv.index("--minutes") + 1])
    ck = torch.load(out, map_location="cpu", weights_only=False)
    if ck["elapsed_s"] < minutes * 60 - 1e-6:
        raise SystemExit(f"training {out} stopped at {ck['elapsed_s'] / 60:.1f} of {minutes} min; rerun to resume")


def make_plans(sens_path: Path, ld: Path, unif: list[int], kinds: list[str] = ("fmpq",)) -> None:
    """Uniform plans and FMPQ plans at the exact size of each uniform plan (adaptive + grid search),
    one set per sensitivity criterion (``kinds``: variant prefixes of :data:`KINDS`)."""
    crit = {v: k for k, v in KINDS.items()}
    for kind in kinds:
        _make_plans(sens_path, ld, unif, kind, crit[kind], write_uniform=kind == kinds[0])


def _make_plans(sens_path: Path, ld: Path, unif: list[int], kind: str, criterion: str, write_uniform: bool) -> None:
    from megabit.search import QuantPlan, SensitivityTable, adaptive_search, fill_budget, grid_search
    from megabit.search.allocate import uniform_bits

    table = SensitivityTable.load(sens_path).rescored(criterion)
    for b in unif:
        up = QuantPlan(list(table.layers), uniform_bits(table, b), meta={"method": "uniform", "bits": b},
                       granularity=table.granularity)
        if write_uniform:
            up.save(ld / f"plan_u{b}.json")
        target = up.size_bits
        # equal size: the plan may not exceed the uniform size (tol one-sided is emulated by aiming 0.5 % low)
        res = adaptive_search(table, target * 0.995, tol=0.005)
        grid = grid_search(table, target * 0.995, tol=0.005)
        plan = res.to_plan(table, sensitivity=str(sens_path), target_uniform_bits=b, criterion=criterion,
                           grid={"iterations": grid.iterations, "size_bits": grid.size_bits,
                                 "converged": grid.converged, "seconds": round(grid.seconds, 4)})
        # a target inside a jump of S(beta) leaves budget unused: fill it greedily, never above uniform [I]
        filled, steps = fill_budget(table, res.bits, target)
        plan.meta.update({"search_size_bits": res.size_bits, "fill_steps": steps})
        plan = QuantPlan(plan.layers, filled, plan.scale_bits, plan.meta, plan.granularity)
        plan.save(ld / f"plan_{kind}{b}.json")


# ---------------------------------------------------------------- workers ----

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_lock(lock: Path) -> bool:
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return False
            lock.unlink(missing_ok=True)  # stale: its worker died; resume its stage
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def work(a) -> None:
    torch.set_num_threads(a.threads)
    w = Path(a.work)
    stages = stages_for(a)
    done_dir, lock_dir = w / "_done", w / "_lock"
    done_dir.mkdir(parents=True, exist_ok=True)

    def is_done(name: str) -> bool:
        return (done_dir / name.replace("/", "__")).exists()

    while True:
        pending = [s for s in stages if not is_done(s.name)]
        if not pending:
            print("all stages done", flush=True)
            return
        took = False
        for s in pending:
            if not all(is_done(d) for d in s.deps):
                continue
            lock = lock_dir / s.name.replace("/", "__")
            if not _try_lock(lock):
                continue
            if is_done(s.name):
                lock.unlink(missing_ok=True)
                continue
            t0 = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] pid {os.getpid()} start {s.name}", flush=True)
            (w / s.name).parent.mkdir(parents=True, exist_ok=True)
            s.run()
            dt = time.perf_counter() - t0
            (done_dir / s.name.replace("/", "__")).write_text(json.dumps({"seconds": round(dt, 1),
                                                                           "pid": os.getpid()}))
            lock.unlink(missing_ok=True)
            print(f"[{time.strftime('%H:%M:%S')}] done {s.name} in {dt:.0f} s", flush=True)
            took = True
            break
        if not took:
            time.sleep(10)


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.collect:
        from lic_fmpq_report import collect

        collect(a)
        return 0
    work(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
