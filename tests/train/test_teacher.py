import json

import pytest
import torch

from megabit.cli.main import main as cli
from megabit.data import load_cifar10
from megabit.models.teacher import AirbenchTeacher, TeacherConfig
from megabit.train.classifier import TrainConfig, load_teacher, train_classifier
from megabit.train.teacher import TeacherTrainConfig, train_teacher
from tests.conftest import tiny_cfg

SMALL = dict(widths=(8, 16, 16), batch_size=8, compile=False, threads=1, bf16=False)


def test_whitening_conv_decorrelates_patches():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    x[:, 1] = (x[:, 0].int() * 3 // 4 + x[:, 1].int() // 4).to(torch.uint8)  # correlated channels
    m = AirbenchTeacher(TeacherConfig(widths=(8, 16, 16)))
    m.init_whitening(x, eps=0.0)
    with torch.no_grad():
        z = torch.nn.functional.conv2d(m.prepare_input(x), m.whiten.weight[:12])
    z = z.permute(0, 2, 3, 1).reshape(-1, 12)
    z = z - z.mean(0)
    cov = z.T @ z / len(z)
    assert torch.allclose(cov, torch.eye(12), atol=1e-3)
    assert torch.equal(m.whiten.weight[12:], -m.whiten.weight[:12])


def test_teacher_trains_resumes_and_freezes_the_whitening_bias(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    out = tmp_path / "t"
    r = train_teacher(TeacherTrainConfig(epochs=1, whiten_bias_epochs=1, **SMALL), train, test, out, progress=False)
    assert r["epochs"] == 1 and 0 <= r["accuracy"] <= 1
    bias1 = torch.load(out / "checkpoint.pt", weights_only=False)["model"]["whiten.bias"]
    train_teacher(TeacherTrainConfig(epochs=3, whiten_bias_epochs=1, **SMALL), train, test, out, resume=True, progress=False)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    t = load_teacher(out / "model.pt")
    assert isinstance(t, AirbenchTeacher) and t.cfg.widths == (8, 16, 16)
    assert torch.equal(t.whiten.bias, bias1)  # trained only in the first whiten_bias_epochs
    assert not torch.equal(t.groups[0].norm1.bias, torch.zeros_like(t.groups[0].norm1.bias))


def test_quantized_student_distils_from_the_teacher_file(tmp_path, cifar_root):
    train, test = load_cifar10(cifar_root, "train"), load_cifar10(cifar_root, "test")
    train_teacher(TeacherTrainConfig(epochs=1, **SMALL), train, test, tmp_path / "t", progress=False)
    fast = dict(compile=False, bf16=True, batch_size=16, tta=False, threads=1, epochs_bn=1, epochs_bsn=0)
    runs = {}
    for name, extra in {"plain": {}, "kd": {"teacher": str(tmp_path / "t" / "model.pt"), "kd_alpha": 0.9}}.items():
        train_classifier(TrainConfig(**fast, **extra), train, test, tmp_path / name, model_cfg=tiny_cfg(), progress=False)
        runs[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
    assert runs["plain"] != runs["kd"]


def test_bad_teacher_files_give_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a megabit model file"):
        load_teacher(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no such teacher file"):
        load_teacher(tmp_path / "missing.pt")
    torch.save({"format": "megabit-teacher", "config": {"widths": [8, 16, 16]}, "state_dict": {}}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="not a valid megabit teacher file"):
        load_teacher(tmp_path / "empty.pt")


def test_train_teacher_cli(tmp_path, cifar_root, capsys):
    rc = cli(["train-teacher", "--data-root", str(cifar_root), "--out", str(tmp_path / "c"), "--epochs", "1",
              "--batch-size", "8", "--no-compile", "--no-bf16", "--threads", "1", "--quiet"])
    assert rc == 0 and (tmp_path / "c" / "model.pt").exists()
    assert 0 <= json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] <= 1
    rc = cli(["train-teacher", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("megabit: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
