"""A float ResNet-style CIFAR-10 teacher for distilling the quantized classifiers.

The layout is airbench94's (K. Jordan, "94% on CIFAR-10 in 3.29 seconds", 2024): a frozen 2x2
whitening conv (PCA of training patches), then three conv groups ``conv ─ maxpool ─ BN ─ GELU ─
conv ─ BN ─ GELU`` of widths 64 / 256 / 256, a 3x3 max-pool and a bias-free linear head scaled by
1/9. About 1.5x the multiply-adds of ``nqe-1mbit`` and no budget: it only runs at training time,
as the ``teacher`` of ``megabit train-classifier``.

[I] Used here as a stronger teacher than the student's own float twin; the NQE paper does not
distil. Input: images as ``uint8`` (or float 0..255) ``[N, 3, 32, 32]`` like :class:`~megabit.models.nqe.NQE`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TeacherConfig", "AirbenchTeacher", "save_teacher", "load_teacher_file", "TEACHER_FORMAT"]

TEACHER_FORMAT = "megabit-teacher"
_MEAN = (0.4914, 0.4822, 0.4465)
_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class TeacherConfig:
    widths: tuple[int, int, int] = (64, 256, 256)
    whiten_kernel: int = 2
    bn_momentum: float = 0.6  # airbench's convention: running = 0.6 * running + 0.4 * batch
    scaling: float = 1 / 9
    num_classes: int = 10
    name: str = "airbench"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TeacherConfig":
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown teacher config fields: {sorted(unknown)}")
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


def _bn(c: int, momentum: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, momentum=1 - momentum, eps=1e-12)
    bn.weight.requires_grad_(False)  # airbench: scale fixed at 1, only the bias is learned
    return bn


class _Conv(nn.Conv2d):
    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding="same", bias=False)
        with torch.no_grad():  # identity-initialise the first cin filters (airbench's dirac init)
            nn.init.dirac_(self.weight[:cin])


class _Group(nn.Module):
    def __init__(self, cin: int, cout: int, momentum: float):
        super().__init__()
        self.conv1, self.norm1 = _Conv(cin, cout), _bn(cout, momentum)
        self.conv2, self.norm2 = _Conv(cout, cout), _bn(cout, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchTeacher(nn.Module):
    def __init__(self, cfg: TeacherConfig = TeacherConfig()):
        super().__init__()
        self.cfg = cfg
        k = cfg.whiten_kernel
        self.whiten = nn.Conv2d(3, 2 * 3 * k * k, k, bias=True)
        self.whiten.weight.requires_grad_(False)
        w1, w2, w3 = cfg.widths
        cw = self.whiten.out_channels
        self.groups = nn.Sequential(_Group(cw, w1, cfg.bn_momentum), _Group(w1, w2, cfg.bn_momentum),
                                    _Group(w2, w3, cfg.bn_momentum))
        self.head = nn.Linear(w3, cfg.num_classes, bias=False)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1) * 255)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """PCA whitening of the ``k x k`` patches of ``x`` (uint8 training images): filters ``±v/sqrt(λ+eps)``."""
        k = self.cfg.whiten_kernel
        xf = self.prepare_input(x)
        p = xf.unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, 3 * k * k).double()
        p = p - p.mean(0)
        cov = p.T @ p / len(p)
        lam, vec = torch.linalg.eigh(cov)
        filt = (vec.T / torch.sqrt(lam + eps)[:, None]).reshape(-1, 3, k, k)  # rows (c, dy, dx) as the conv's
        self.whiten.weight.copy_(torch.cat([filt, -filt]).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(self.prepare_input(x)))
        x = self.groups(x)
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * self.cfg.scaling


def save_teacher(model: AirbenchTeacher, path: str | os.PathLike, extra: dict | None = None) -> None:
    from ..utils import atomic_save

    atomic_save({"format": TEACHER_FORMAT, "config": model.cfg.to_dict(),
                 "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra or {}}, path)


def load_teacher_file(obj: dict, path: str | os.PathLike) -> AirbenchTeacher:
    """Build the teacher from a loaded ``megabit-teacher`` dict; one-line ValueError when it does not fit."""
    try:
        model = AirbenchTeacher(TeacherConfig.from_dict(obj["config"]))
        sd = {k.removeprefix("_orig_mod."): v for k, v in obj["state_dict"].items()}
        model.load_state_dict(sd)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a valid megabit teacher file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return model.eval()
