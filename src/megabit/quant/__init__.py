"""Quantization core: STE ops, weight quantizers (binary/ternary/quinary/k-bit, HEQ step), HWMSB."""
from .act import HWMSB, hwmsb_codes
from .ste import clamp_leaky, floor_ste, round_ste, sign_ste, stochastic_sign_ste
from .weight import QuantSpec, WeightQuantizer, bits_per_code, code_range

__all__ = ["HWMSB", "hwmsb_codes", "clamp_leaky", "floor_ste", "round_ste", "sign_ste", "stochastic_sign_ste",
           "QuantSpec", "WeightQuantizer", "bits_per_code", "code_range"]
