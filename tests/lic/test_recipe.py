"""Smoke test of recipes/lic_train.py: a 2-step run, then a resume to step 3."""
import importlib.util
from pathlib import Path

import pytest
import torch

from megabit.models.lic.checkpoint import load_codec

from ..search.helpers import write_images

ROOT = Path(__file__).resolve().parents[2]


def _recipe():
    spec = importlib.util.spec_from_file_location("lic_train", ROOT / "recipes" / "lic_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
