"""Normalization for quantized nets: layer-shared Bit-Shift Normalization."""
from .bsn import BitShiftNorm

__all__ = ["BitShiftNorm"]
