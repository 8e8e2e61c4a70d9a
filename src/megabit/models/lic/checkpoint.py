"""Codec checkpoints: ``{"format", "version", "config", "state_dict", ...}`` saved atomically.

A megabit checkpoint always says how to rebuild its model (:class:`~megabit.models.lic.LICConfig`).
A bare state_dict (e.g. a user's CompressAI checkpoint, with or without a ``"state_dict"`` key) loads
too when the caller supplies the config.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from megabit.utils import atomic_save

from . import LICConfig, build_codec

__all__ = ["CODEC_FORMAT", "save_codec", "load_codec"]

CODEC_FORMAT = "megabit-lic-codec"


def save_codec(path: str | os.PathLike, model: nn.Module, cfg: LICConfig, **meta: Any) -> None:
    atomic_save({"format": CODEC_FORMAT, "version": 1, "config": cfg.to_dict(), "state_dict": model.state_dict(),
                 **meta}, path)


def load_codec(path: str | os.PathLike, cfg: LICConfig | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a codec; returns ``(model in eval mode with CDFs built, metadata dict)``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types on a corrupt file
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    if obj.get("format") == CODEC_FORMAT:
        cfg = LICConfig.from_dict(obj["config"])
        sd = obj["state_dict"]
        meta = {k: v for k, v in obj.items() if k not in ("state_dict", "optimizer", "aux_optimizer")}
    else:
        if cfg is None:
            raise ValueError(f"{path}: a bare state_dict needs --arch/--N/--M to say which model it is")
        sd = obj.get("state_dict", obj)
        meta = {"format": "state_dict", "config": cfg.to_dict()}
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    model = build_codec(cfg)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match {cfg.arch} N={cfg.N} M={cfg.M}: "
                         f"{str(e).splitlines()[0]}") from None
    model.eval()
    model.update(force=True)
    return model, meta
