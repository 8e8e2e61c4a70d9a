"""Models: the NQE quantized encoder/classifier (more codecs in later modules)."""
from .nqe import NQE, PRESETS, LayerSpec, NQEConfig, build_model, get_preset

__all__ = ["NQE", "PRESETS", "LayerSpec", "NQEConfig", "build_model", "get_preset"]
