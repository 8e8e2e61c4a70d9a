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
