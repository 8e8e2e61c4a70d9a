"""Smoke test of recipes/lic_train.py: a 2-step run, then a resume to step 3."""
from pathlib import Path

import pytest
import torch

from megabit.models.lic.checkpoint import load_codec

from ..conftest import load_recipe
from ..search.helpers import write_images

ROOT = Path(__file__).resolve().parents[2]


def _recipe():
    return load_recipe("lic_train")


def test_lic_train_runs_and_resumes(tmp_path):
    data = write_images(tmp_path / "img", n=2, size=64)
    out = tmp_path / "c.pt"
    args = ["--data", str(data), "--N", "8", "--M", "8", "--batch", "2", "--crop", "64", "--lmbda", "0.01",
            "--out", str(out)]
    rec = _recipe()
    assert rec.main(args + ["--steps", "2"]) == 0
    assert torch.load(out, weights_only=False)["step"] == 2
    assert rec.main(args + ["--steps", "3", "--amp", "none"]) == 0
    ck = torch.load(out, weights_only=False)
    assert ck["step"] == 3
    net, meta = load_codec(out)
    assert meta["lmbda"] == 0.01


def test_lic_train_init_from_another_lambda(tmp_path):
    data = write_images(tmp_path / "img", n=2, size=64)
    common = ["--data", str(data), "--N", "8", "--M", "8", "--batch", "2", "--crop", "64", "--amp", "none"]
    rec = _recipe()
    base = tmp_path / "base.pt"
    assert rec.main(common + ["--lmbda", "0.01", "--steps", "1", "--out", str(base)]) == 0
    ft = tmp_path / "ft.pt"
    assert rec.main(common + ["--lmbda", "0.05", "--steps", "0", "--init", str(base), "--out", str(ft)]) == 0
    a, b = torch.load(base, weights_only=False), torch.load(ft, weights_only=False)
    assert b["lmbda"] == 0.05 and b["step"] == 0 and b["init"] == str(base)
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())
    other = tmp_path / "other.pt"
    with pytest.raises(ValueError, match="different architecture"):
        rec.main(["--data", str(data), "--N", "16", "--M", "8", "--crop", "64", "--steps", "0",
                  "--init", str(base), "--out", str(other)])


def test_fmpq_study_stage_locks(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import lic_fmpq_bd as study
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    lock = tmp_path / "l" / "stage"
    assert study._try_lock(lock) and not study._try_lock(lock)  # held by this (live) process
    lock.write_text("999999999")  # a worker that died: its stage is taken over
    assert study._try_lock(lock)
    names = [s.name for s in study.stages_for(study.build_parser().parse_args(["--work", str(tmp_path)]))]
    assert len(names) == len(set(names)) == 3 + 3 * 4 * (4 + 2 * 3 * 2)
    assert names[:3] == [f"{a}/base" for a in study.ARCHS]


def test_fmpq_study_second_criterion_makes_its_own_plans(tmp_path):
    import sys

    import torch

    from megabit.search import QuantPlan, layer_sensitivity

    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import lic_fmpq_bd as study
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    a = study.build_parser().parse_args(["--work", str(tmp_path), "--archs", "scale-hyperprior",
                                         "--criteria", "rd,bd-proxy", "--uniform", "8,4"])
    names = [s.name for s in study.stages_for(a)]
    assert len(names) == len(set(names)) == 1 + 4 * (4 + 2 * 3 * 2)
    assert "scale-hyperprior/l0.0067/qat_fmpqbdp4" in names
    with pytest.raises(SystemExit, match="criteria"):
        study.fmpq_kinds(study.build_parser().parse_args(["--criteria", "psnr"]))

    from tests.search.helpers import tiny_codec

    sens = tmp_path / "sens.json"
    layer_sensitivity(tiny_codec(), torch.rand(2, 3, 64, 64), 0.01, bits=range(2, 13)).save(sens)
    study.make_plans(sens, tmp_path, [8, 4], ["fmpq", "fmpqbdp"])
    for b in (8, 4):
        u = QuantPlan.load(tmp_path / f"plan_u{b}.json")
        for k, crit in (("fmpq", "rd"), ("fmpqbdp", "bd-proxy")):
            p = QuantPlan.load(tmp_path / f"plan_{k}{b}.json")
            assert p.meta["criterion"] == crit and p.size_bits <= u.size_bits


def test_fmpq_study_extra_eval_set_stages_and_report(tmp_path):
    import json
    import sys

    import torch

    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import lic_fmpq_bd as study
        import lic_fmpq_report as report
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    argv = ["--work", str(tmp_path / "w"), "--archs", "scale-hyperprior", "--uniform", "8,4", "--lambdas", "0.1,0.2,0.3,0.4",
            "--extra-eval", "clic=/data/clic", "--results", str(tmp_path / "res"), "--tag", "t"]
    a = study.build_parser().parse_args(argv)
    names = [s.name for s in study.stages_for(a)]
    per_lambda = 4 + 2 * 2 * 2  # train, sens, plans, eval_float; qat + eval for u8, fmpq8, u4, fmpq4
    assert len(names) == len(set(names)) == 1 + 4 * (per_lambda + 1 + 4)  # + clic_float, clic_<variant>
    assert "scale-hyperprior/l0.2/clic_fmpq4" in names
    for bad in ("clic", "kodak=/x", "=/x"):
        with pytest.raises(SystemExit, match="extra-eval"):
            study.extra_evals(study.build_parser().parse_args(["--extra-eval", bad]))
    # the report: curves from (stub) result files of both sets; BD-rates only where a set is complete
    d = tmp_path / "w" / "scale-hyperprior"
    d.mkdir(parents=True)
    torch.save({"config": {"arch": "scale-hyperprior", "N": 8, "M": 8}, "lmbda": 0.1, "step": 1, "elapsed_s": 1}, d / "base.pt")
    for i, lm in enumerate((0.1, 0.2, 0.3, 0.4)):
        ld = d / f"l{lm}"
        ld.mkdir()
        for v, gain in (("float", 0.0), ("u8", 0.0), ("fmpq8", 0.05), ("u4", -0.3), ("fmpq4", -0.1)):
            for name, off in (("kodak", 0.0), ("clic", 2.0)):
                r = {"mean_bpp": 0.1 * (i + 1), "mean_psnr": 25 + off + 2 * i ** 0.5 + gain,
                     "mean_ms_ssim": 0.9 + 0.01 * i, "n_images": 3}
                (ld / f"{name}_{v}.json").write_text(json.dumps(r))
    report.collect(a)
    res = json.loads((tmp_path / "res" / "fmpq_scale-hyperprior_t.json").read_text())
    assert set(res["bd_vs_clic"]) == set(res["bd_vs"]) and res["extra_eval_sets"] == {"clic": "/data/clic"}
    assert res["bd_vs_clic"]["fmpq8_vs_u8"]["bd_rate_psnr_cubic"] < 0 < res["bd_vs_clic"]["u4_vs_u8"]["bd_rate_psnr_cubic"]
    assert res["per_lambda"]["0.1"]["clic"]["u8"]["psnr"] == 27.0


def test_compare_recipe_bd_between_two_reports(tmp_path):
    import json as _json

    cmp = load_recipe("lic_fmpq_compare")
    lams = ["0.0018", "0.0035", "0.0067", "0.013"]
    pts = [(0.2, 26.0), (0.3, 27.0), (0.45, 28.0), (0.65, 29.0)]

    def report(name, rate_factor, variant="u8"):
        rows = {lm: {"kodak": {variant: {"bpp": r * rate_factor, "psnr": q, "ms_ssim": 0.9 + 0.01 * i}}}
                for i, (lm, (r, q)) in enumerate(zip(lams, pts))}
        f = tmp_path / name
        f.write_text(_json.dumps({"per_lambda": rows}))
        return f

    a, b = report("a.json", 1.0), report("b.json", 0.9, "fmpq8")
    out = tmp_path / "cmp.json"
    assert cmp.main([f"{a}:u8", f"{b}:fmpq8", f"{a}:u8", "--out", str(out)]) == 0
    res = _json.loads(out.read_text())["vs"]
    assert res[f"{b}:fmpq8"]["bd_rate_psnr_cubic"] == pytest.approx(-10.0, abs=1e-3)  # 10 % fewer bits everywhere
    assert res[f"{a}:u8"]["bd_rate_psnr_cubic"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(SystemExit, match="points"):
        cmp.main([f"{a}:u8", f"{a}:u4"])  # a variant the report does not have
    with pytest.raises(SystemExit, match="FILE:VARIANT"):
        cmp.main([f"{a}:u8", "nocolon"])
