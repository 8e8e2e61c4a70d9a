"""Learned image codecs (hyperprior family) with CompressAI's contract and state_dict names.

>>> import torch
>>> from megabit.models.lic import LICConfig, build_codec
>>> net = build_codec(LICConfig("scale-hyperprior", N=8, M=8)).eval()
>>> out = net(torch.rand(1, 3, 64, 64))
>>> sorted(out), sorted(out["likelihoods"])
(['likelihoods', 'x_hat'], ['y', 'z'])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional, get_scale_table, pmf_to_quantized_cdf
from .layers import GDN, LowerBound, MaskedConv2d, NonNegativeParametrizer
from .models import (
    Cheng2020Anchor,
    CompressionModel,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)

__all__ = [
    "GDN", "LowerBound", "NonNegativeParametrizer", "MaskedConv2d",
    "EntropyModel", "EntropyBottleneck", "GaussianConditional", "get_scale_table", "pmf_to_quantized_cdf",
    "CompressionModel", "ScaleHyperprior", "MeanScaleHyperprior", "JointAutoregressiveHierarchicalPriors",
    "Cheng2020Anchor", "ARCHITECTURES", "LICConfig", "build_codec",
]

#: architecture name (persisted in checkpoints, typed on the CLI) -> class; names follow CompressAI's zoo
ARCHITECTURES: dict[str, type[CompressionModel]] = {
    "scale-hyperprior": ScaleHyperprior,  # bmshj2018-hyperprior
    "mean-scale-hyperprior": MeanScaleHyperprior,  # mbt2018-mean
    "joint-autoregressive": JointAutoregressiveHierarchicalPriors,  # mbt2018
    "cheng2020-anchor": Cheng2020Anchor,
}


@dataclass(frozen=True)
class LICConfig:
    """How to rebuild a codec: architecture name and channel widths (M is ignored by cheng2020-anchor, M = N)."""

    arch: str = "scale-hyperprior"
    N: int = 64
    M: int = 96

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LICConfig":
        try:
            return cls(arch=str(d["arch"]), N=int(d["N"]), M=int(d.get("M", d["N"])))
        except (KeyError, TypeError) as e:
            raise ValueError(f"invalid codec config {d!r}: {e}") from None


def build_codec(cfg: LICConfig) -> nn.Module:
    """Instantiate the codec a config describes."""
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown codec architecture {cfg.arch!r} (choose from {', '.join(ARCHITECTURES)})")
    if cfg.arch == "cheng2020-anchor":
        return Cheng2020Anchor(N=cfg.N)
    return ARCHITECTURES[cfg.arch](N=cfg.N, M=cfg.M)
