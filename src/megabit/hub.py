"""Bundled models and samples, and resolving a MODEL argument (preset name, .pt or .mbit path)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .models.nqe import NQE, PRESETS

__all__ = ["DEFAULT_CLASSIFIER", "asset_path", "bundled_classifier_path", "load_resnet", "locate_classifier", "resolve_classifier", "sample_cifar_path"]


# The demo's and every command's default classifier: the most accurate bundled one. [I] nqe-1mbit-ans-hr
# (~10 % wider than nqe-1mbit, fits 2^20 only tANS-coded; first pool one layer later; per-channel BSN
# scales). Also bundled: nqe-1mbit-hr (fits raw-packed too) and nqe-1mbit (the paper-style layer-shared
# BSN, the fewest multiply-adds).
DEFAULT_CLASSIFIER = "nqe-1mbit-ans-hr"


def asset_path(name: str) -> Path:
    return Path(str(resources.files("megabit") / "assets" / name))


def sample_cifar_path() -> Path:
    """500 CIFAR-10 test images (50 per class) from the JPEG-q75 copy, shipped with the package."""
    return asset_path("cifar10-sample-test.npz")


def bundled_classifier_path(name: str = DEFAULT_CLASSIFIER) -> Path | None:
    p = asset_path(f"{name}.mbit")
    return p if p.exists() else None


def locate_classifier(spec: str | os.PathLike | None) -> Path:
    """The file a classifier argument names: a bundled name (default: ``DEFAULT_CLASSIFIER``), a .mbit or
    .pt path, or a run dir holding model.pt. Raises ``ValueError`` with one line if there is none."""
    s = str(DEFAULT_CLASSIFIER if spec is None else spec)
    if s in PRESETS and not Path(s).exists():
        p = bundled_classifier_path(s)
        if p is None:
            raise ValueError(f"no trained model is bundled for preset {s!r} (give a .pt or .mbit path)")
        return p
    path = Path(s)
    if not path.exists():
        bundled = [n for n in PRESETS if bundled_classifier_path(n) is not None]
        raise ValueError(f"{s}: no such model file or bundled model (bundled: {', '.join(bundled)})")
    if path.is_dir():
        if not (path / "model.pt").exists():
            raise ValueError(f"{s}: a directory without model.pt")
        path = path / "model.pt"
    return path


def resolve_classifier(spec: str | os.PathLike | None) -> tuple[NQE, str]:
    """Load a classifier from a bundled name, a .mbit file or a .pt file. Returns (model, description)."""
    from .fmt.mbit import is_mbit, mbit_to_model, read_mbit
    from .train.classifier import load_classifier

    path = locate_classifier(spec)
    if is_mbit(path):
        bundled = path == bundled_classifier_path(path.stem)
        return mbit_to_model(read_mbit(path)), (f"bundled {path.stem} ({path.name})" if bundled else str(path))
    return load_classifier(path), str(path)


def load_resnet(spec: str | os.PathLike):
    """The ResNet of the entropy-coded-weights study named by ``spec``, else None.

    ``spec``: a ``recipes/resnet_table1.py`` model.pt, its run dir, or a ``.mbit`` of kind
    ``"resnet"`` (``megabit pack``). Other files give None (they may be NQE models or codecs); a
    ResNet file that does not load raises ``ValueError`` / ``MbitError`` with one line.
    """
    p = Path(spec)
    if p.is_dir() and (p / "model.pt").is_file():
        p = p / "model.pt"
    if not p.is_file():
        return None
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic == b"MBIT":
        from .fmt.mbit import read_container
        from .fmt.mbit_resnet import read_resnet_mbit

        return read_resnet_mbit(p) if read_container(p)[2].get("kind") == "resnet" else None
    if p.suffix != ".pt":
        return None
    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - the classifier loader reports unreadable files
        return None
    if not (isinstance(obj, dict) and "state_dict" in obj and "blocks_per_stage" in obj.get("config", {})):
        return None
    from .models.resnet import ResNet, ResNetConfig

    try:
        m = ResNet(ResNetConfig.from_dict(obj["config"]))
        m.load_state_dict(obj["state_dict"])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{spec}: a ResNet model file that does not load ({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None
    return m.eval()
